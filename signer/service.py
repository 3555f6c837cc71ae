"""The key ring the API serves from: configured keys by key_id, opened once at start-up."""

import logging
import threading
from collections.abc import Iterable, Iterator

from signer import metrics
from signer.config import Config
from signer.errors import InvalidRequest, KeyNotFound
from signer.wallet import WalletSigner

log = logging.getLogger(__name__)

MAX_KEY_ID_LENGTH = 64


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
        """Open every configured key (`signer.keyload`); on a failure of a `[keys]` entry
        close what was opened, then raise."""
        from signer.keyload import open_signers

        return cls(open_signers(config))

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
