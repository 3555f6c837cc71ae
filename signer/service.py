"""The key ring the API serves from: configured keys by key_id, opened once at start-up."""

import logging
import threading
from collections.abc import Iterable, Iterator

from signer import metrics
from signer.backends.base import DigestBackend
from signer.config import Config, EnvKeyConfig, KeyConfig, KmsKeyConfig, Pkcs11KeyConfig
from signer.errors import InvalidRequest, KeyNotFound
from signer.wallet import WalletSigner

log = logging.getLogger(__name__)

MAX_KEY_ID_LENGTH = 64


def open_backend(
    key_id: str, config: KeyConfig, max_concurrent_calls: int | None = None
) -> DigestBackend:
    """Open one key's backend; heavy libraries are imported only for backends in use.

    `max_concurrent_calls`: how many signing calls the server runs at once (its workers), which
    a backend that keeps its own threads or connections (KMS) sizes them by."""
    if isinstance(config, EnvKeyConfig):
        from signer.backends.env import EnvBackend

        return EnvBackend.from_source(key_id, config.private_key_env, config.private_key_file)
    if isinstance(config, Pkcs11KeyConfig):
        from signer.backends.pkcs11 import Pkcs11Backend

        pkcs11_backend: DigestBackend = Pkcs11Backend.open(key_id, config)
        return pkcs11_backend
    if isinstance(config, KmsKeyConfig):
        from signer.backends.kms import KmsBackend

        kms_backend: DigestBackend = KmsBackend.open(key_id, config, max_concurrent_calls)
        return kms_backend
    raise AssertionError(f"unhandled backend config {type(config).__name__}")  # pragma: no cover


class KeyRing:
    """Signers by their own key_id: a name and the key_id it reports cannot disagree."""

    def __init__(self, signers: Iterable[WalletSigner]) -> None:
        self._signers: dict[str, WalletSigner] = {}
        for signer in signers:
            if signer.key_id in self._signers:
                raise ValueError(f"two signers named {signer.key_id!r}")
            self._signers[signer.key_id] = signer
        metrics.register_keys(self._signers)

    @classmethod
    def from_config(cls, config: Config) -> "KeyRing":
        """Open every configured key; on any failure close what was opened, then raise."""
        opened: list[DigestBackend] = []
        signers: list[WalletSigner] = []
        try:
            for key_id, key_config in config.keys.items():
                # +1: the periodic self-test may sign while every worker does
                opened.append(open_backend(key_id, key_config, config.server.max_workers + 1))
                signers.append(WalletSigner(key_id, opened[-1]))
                log.info(
                    "key %r: backend %s, address %s",
                    key_id,
                    key_config.backend,
                    signers[-1].address,
                )
        except BaseException:
            for backend in opened:
                backend.close()
            raise
        return cls(signers)

    def get(self, key_id: str) -> WalletSigner:
        signer = self._signers.get(key_id)
        if signer is None:
            if not key_id:
                raise InvalidRequest("key_id: required")
            raise KeyNotFound(f"no key named {shown_key_id(key_id)!r} is configured")
        return signer

    def __iter__(self) -> Iterator[WalletSigner]:
        return iter(self._signers.values())

    def __len__(self) -> int:
        return len(self._signers)

    def self_test(self, timeout: float | None = None) -> None:
        """Sign and recover with every key; raises on the first key that fails."""
        for signer in self:
            signer.self_test(timeout)
            log.info("key %r passed its self-test", signer.key_id)

    def close(self, timeout: float | None = None) -> bool:
        """Close every backend; with a timeout, give up waiting after `timeout` seconds (a
        backend still busy in a call is left to the process's exit). True if all closed."""
        if timeout is None:
            for signer in self:
                signer.backend.close()
            return True
        closer = threading.Thread(target=self.close, name="close-backends", daemon=True)
        closer.start()
        closer.join(timeout)
        if closer.is_alive():
            log.warning("backends did not close within %.1fs; leaving them to the exit", timeout)
            return False
        return True


def shown_key_id(key_id: str) -> str:
    """A caller's key id as records, logs and errors may quote it: no configured key id is
    longer than MAX_KEY_ID_LENGTH, so a longer one is cut (a stranger's 250,000-character key
    id must not become 250 KB of durable audit record)."""
    return key_id if len(key_id) <= MAX_KEY_ID_LENGTH else key_id[:MAX_KEY_ID_LENGTH] + "..."
