"""Key versions, as every replica sees them: which version of a key id is active, draining or
retired, read from the shared store at most FRESHNESS old (as freeze is).

Version 1 is the key as `[keys.NAME]` configures it; `keys rotate` records it and adds version
2, 3, ... with the config that opens each (its `source`). A replica opens a later version the
first time a request needs it, checks its address against the store's and self-tests it.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from signer.config import DrainRule, key_config_from_json
from signer.errors import BackendUnavailable, ConfigError, FailedPrecondition, KeyRetired
from signer.eth.fields import checksum
from signer.keyload import open_backend
from signer.store import KeyVersionRow, Store
from signer.wallet import WalletSigner

log = logging.getLogger(__name__)

ACTIVE, DRAINING, RETIRED = "active", "draining", "retired"
STATES = (ACTIVE, DRAINING, RETIRED)
# A rotation or retirement on any replica holds everywhere within this many seconds.
FRESHNESS = 0.5
# How long opening and self-testing a newly seen version may take on a request's path.
OPEN_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Resolved:
    """The signer a request uses, its stored version (None: the key was never rotated) and,
    when that version is draining, the active version it drains to."""

    signer: WalletSigner
    row: KeyVersionRow | None = None
    active: KeyVersionRow | None = None
    drain: DrainRule = "sweep"

    @property
    def draining(self) -> bool:
        return self.row is not None and self.row.state == DRAINING


class KeyVersions:
    def __init__(
        self,
        store: Store,
        *,
        freshness: float = FRESHNESS,
        clock: Callable[[], float] = time.monotonic,
        max_concurrent_calls: int | None = None,
    ) -> None:
        self._store = store
        self._freshness = freshness
        self._clock = clock
        self._max_calls = max_concurrent_calls
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[KeyVersionRow, ...]] = {}
        self._read_at = float("-inf")
        self._open_lock = threading.Lock()
        self._opened: dict[tuple[str, int, str], WalletSigner] = {}

    def current(self) -> dict[str, tuple[KeyVersionRow, ...]]:
        """Stored versions by key id, re-read when older than FRESHNESS. A store fault raises
        StoreUnavailable: a version we cannot check is not signed with (fail closed)."""
        if self._clock() - self._read_at < self._freshness:
            return self._rows
        with self._lock:
            if self._clock() - self._read_at >= self._freshness:
                started = self._clock()
                rows: dict[str, list[KeyVersionRow]] = {}
                for row in self._store.key_versions():
                    rows.setdefault(row.key_id, []).append(row)
                self._rows = {k: tuple(v) for k, v in rows.items()}
                self._read_at = started
            return self._rows

    def of(self, key_id: str) -> tuple[KeyVersionRow, ...]:
        return self.current().get(key_id, ())

    def active(self, base: WalletSigner, drain: DrainRule = "sweep") -> Resolved:
        """The version a request by key id signs with: the active one (`base`, the configured
        key, until a rotation)."""
        rows = self.of(base.key_id)
        if not rows:
            return Resolved(base, drain=drain)
        active = next((r for r in rows if r.state == ACTIVE), None)
        if active is None:  # pragma: no cover - rotate and retire never leave none active
            raise FailedPrecondition(f"key {base.key_id!r} has no active version")
        return Resolved(self._signer(base, active), active, active, drain)

    def by_address(self, address: bytes) -> KeyVersionRow | None:
        """The stored version with this address, if any (retired ones included)."""
        wanted = checksum(address)
        for rows in self.current().values():
            for row in rows:
                if row.address == wanted:
                    return row
        return None

    def resolve(self, base: WalletSigner, row: KeyVersionRow, drain: DrainRule) -> Resolved:
        """A request by address reached `row` of `base`'s key id: retired refuses."""
        if row.state == RETIRED:
            raise retired_error(row)
        rows = self.of(base.key_id)
        active = next((r for r in rows if r.state == ACTIVE), None)
        return Resolved(self._signer(base, row), row, active, drain)

    def check_still_signs(self, resolved: Resolved) -> None:
        """Right before the backend signs: a retirement issued meanwhile stops the request."""
        if resolved.row is None:
            rows = self.of(resolved.signer.key_id)
            if not rows:
                return
            row = next((r for r in rows if r.version == resolved.signer.version), None)
        else:
            row = next((r for r in self.of(resolved.row.key_id)
                        if r.version == resolved.row.version), None)
        if row is not None and row.state == RETIRED:
            raise retired_error(row)

    def _signer(self, base: WalletSigner, row: KeyVersionRow) -> WalletSigner:
        if row.version == 1 and not row.source:
            if base.address != row.address:
                raise FailedPrecondition(
                    f"key {base.key_id!r}: the configured key is {base.address}, but version 1 "
                    f"in the store is {row.address}: [keys.{base.key_id}] no longer names "
                    "version 1 (restore it, or adopt the new key with `keys rotate --to`)")
            return base
        cache_key = (row.key_id, row.version, row.source)
        signer = self._opened.get(cache_key)
        if signer is not None:
            return signer
        with self._open_lock:
            signer = self._opened.get(cache_key)
            if signer is None:
                signer = self._open(row)
                self._opened[cache_key] = signer
        return signer

    def _open(self, row: KeyVersionRow) -> WalletSigner:
        where = f"key {row.key_id!r} version {row.version}"
        try:
            config = key_config_from_json(row.source, where)
            backend = open_backend(row.key_id, config, self._max_calls)
        except ConfigError as exc:
            raise FailedPrecondition(f"{where} cannot be opened: {exc}") from None
        try:
            signer = WalletSigner(row.key_id, backend, version=row.version)
            if signer.address != row.address:
                raise FailedPrecondition(
                    f"{where}: its backend now holds {signer.address}, not {row.address}")
            signer.self_test(OPEN_TIMEOUT)
        except BaseException as exc:
            backend.close()
            if isinstance(exc, ConfigError):
                raise BackendUnavailable(f"{where}: {exc}") from None
            raise
        log.info("%s opened: backend %s, address %s (%s)", where, config.backend,
                 signer.address, row.state)
        return signer

    def close(self) -> None:
        with self._open_lock:
            opened, self._opened = list(self._opened.values()), {}
        for signer in opened:
            signer.backend.close()


def retired_error(row: KeyVersionRow) -> KeyRetired:
    return KeyRetired(
        f"key {row.key_id!r} version {row.version} ({row.address}) was retired at "
        f"{row.changed_at}: {row.reason}; it never signs again")
