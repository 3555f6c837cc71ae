"""TLS material from the files the config names: loaded, checked, and re-read on SIGHUP.

Shared by every door. A file that is missing, unparsable, or a key that does not match its
certificate raises ConfigError naming the file, never its contents.
"""

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signer.config import ServerConfig
from signer.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsMaterial:
    certificate_chain: bytes  # PEM, leaf first
    private_key: bytes = b""  # PEM; never logged, never in repr
    client_ca: bytes | None = None  # PEM bundle; None: clients are not asked for certificates
    not_after: datetime | None = None

    def __repr__(self) -> str:
        return f"TlsMaterial(chain={len(self.certificate_chain)} bytes, mtls={self.mtls})"

    @property
    def mtls(self) -> bool:
        return self.client_ca is not None


def load_tls(config: ServerConfig) -> TlsMaterial:
    assert config.tls_cert_file is not None and config.tls_key_file is not None
    chain_pem = _read(config.tls_cert_file, "server.tls_cert_file")
    key_pem = _read(config.tls_key_file, "server.tls_key_file")
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise ConfigError(
            f"server.tls_cert_file {config.tls_cert_file}: not a PEM certificate"
        ) from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            f"server.tls_key_file {config.tls_key_file}: not an unencrypted PEM private key"
        ) from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if key.public_key().public_bytes(encoding, public) != chain[0].public_key().public_bytes(
        encoding, public
    ):
        raise ConfigError(
            f"server.tls_key_file {config.tls_key_file} does not match the certificate in "
            f"{config.tls_cert_file}"
        )
    client_ca = None
    if config.client_ca_file is not None:
        client_ca = _read(config.client_ca_file, "server.client_ca_file")
        try:
            x509.load_pem_x509_certificates(client_ca)
        except ValueError:
            raise ConfigError(
                f"server.client_ca_file {config.client_ca_file}: not a PEM certificate bundle"
            ) from None
    not_after = chain[0].not_valid_after_utc
    if not_after < datetime.now(UTC):
        log.error("server certificate %s expired at %s", config.tls_cert_file, not_after)
    return TlsMaterial(chain_pem, key_pem, client_ca, not_after)


def _read(path: Path, field: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{field}: cannot read {path}: {exc.strerror}") from None


class ReloadableTls:
    """The current TLS material; `reload` swaps it only when the new files are all good.

    Doors read `current` for each new handshake, so established connections and calls keep
    going while new ones see the new certificate."""

    def __init__(self, config: ServerConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._current = load_tls(config)
        self.generation = 0
        self._listeners: list[Callable[[TlsMaterial], None]] = []

    @property
    def current(self) -> TlsMaterial:
        return self._current

    def on_reload(self, listener: Callable[[TlsMaterial], None]) -> None:
        self._listeners.append(listener)

    def reload(self) -> bool:
        """Re-read the files; on any problem keep the old material, log why, return False."""
        try:
            material = load_tls(self._config)
        except ConfigError as exc:
            log.error("TLS reload failed, keeping the current certificates: %s", exc)
            return False
        with self._lock:
            self._current = material
            self.generation += 1
        for listener in self._listeners:
            listener(material)
        log.info("TLS material reloaded (certificate valid until %s)", material.not_after)
        return True
