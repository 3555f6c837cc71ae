"""Development-only backend: a hex private key from an environment variable or a secret file."""

import logging
import re
from pathlib import Path
from typing import ClassVar

from coincurve import PrivateKey

from signer.errors import ConfigError
from signer.eth.signature import SECP256K1_N, SignatureFormat
from signer.secret_sources import read_secret

log = logging.getLogger(__name__)

_HEX_KEY_RE = re.compile(r"(0x)?[0-9a-fA-F]{64}")


class EnvBackend:
    name: ClassVar[str] = "env"
    signature_format: ClassVar[SignatureFormat] = "raw"

    def __init__(self, private_key: PrivateKey) -> None:
        self._key = private_key
        self._public_key = private_key.public_key.format(compressed=False)

    @classmethod
    def from_source(cls, key_id: str, env: str | None, file: Path | None) -> "EnvBackend":
        """Load from `env` (an environment variable name) or `file`; errors name the source only."""
        where = f"keys.{key_id}"
        text = read_secret(where, "private key", env, file)
        source = f"environment variable {env}" if env is not None else f"file {file}"
        backend = cls(parse_private_key(text, f"{where}: {source}"))
        log.warning(
            "key %r uses the env backend: the private key sits in this process's memory and "
            "environment. For development only; use pkcs11 or kms in production.",
            key_id,
        )
        return backend

    @property
    def public_key(self) -> bytes:
        return self._public_key

    def sign_digest(self, digest: bytes, timeout: float | None) -> bytes:
        # RFC 6979 nonces: the same bytes eth-account (eth-keys on libsecp256k1) produces.
        return self._key.sign_recoverable(digest, hasher=None)[:64]

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<private key redacted>)"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError(f"{type(self).__name__} holds a private key and cannot be pickled")


def parse_private_key(text: str, where: str) -> PrivateKey:
    """A 32-byte hex key (optional 0x, surrounding whitespace ignored); errors never echo it."""
    text = text.strip()
    if not _HEX_KEY_RE.fullmatch(text):
        raise ConfigError(f"{where}: expected 64 hex digits (a 32-byte secp256k1 private key)")
    raw = bytes.fromhex(text.removeprefix("0x"))
    if not 0 < int.from_bytes(raw, "big") < SECP256K1_N:
        raise ConfigError(f"{where}: not a valid secp256k1 private key (out of range)")
    return PrivateKey(raw)
