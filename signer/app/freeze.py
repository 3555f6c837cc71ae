"""Frozen keys, as every replica sees them: read from the shared store at most FRESHNESS old."""

import threading
import time
from collections.abc import Callable

from signer.errors import KeyFrozen
from signer.store import FrozenKey, Store

# A freeze on any replica is enforced everywhere within this many seconds.
FRESHNESS = 0.5


class FreezeState:
    def __init__(
        self,
        store: Store,
        *,
        freshness: float = FRESHNESS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._freshness = freshness
        self._clock = clock
        self._lock = threading.Lock()
        self._frozen: dict[str, FrozenKey] = {}
        self._read_at = float("-inf")

    def current(self) -> dict[str, FrozenKey]:
        """The frozen keys, re-read when older than FRESHNESS. A store fault raises
        StoreUnavailable: a key we cannot check is not signed with (fail closed)."""
        if self._clock() - self._read_at < self._freshness:
            return self._frozen
        with self._lock:
            if self._clock() - self._read_at >= self._freshness:
                started = self._clock()
                self._frozen = self._store.frozen_keys()
                self._read_at = started
            return self._frozen

    def check(self, key_id: str) -> None:
        frozen = self.current().get(key_id)
        if frozen is not None:
            raise KeyFrozen(f"key {key_id!r} is frozen: {frozen.reason}")
