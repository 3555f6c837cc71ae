"""The key ring the API serves from: configured keys by key_id, opened once at start-up."""

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from signer import metrics
from signer.config import Config, DrainRule, KeyConfig, key_config_json
from signer.errors import InvalidRequest, KeyNotFound, SignerError
from signer.wallet import WalletSigner

if TYPE_CHECKING:
    from signer.keyload import KeyTask

log = logging.getLogger(__name__)

MAX_KEY_ID_LENGTH = 64
# Backends a reload replaced or removed are closed this long after the swap: calls that started
# on them finish first (a call's deadline is shorter than this).
RELOAD_CLOSE_DELAY = 60.0


class KeyRing:
    """Signers by their own key_id: a name and the key_id it reports cannot disagree.

    A reload swaps the whole map in one assignment (`reload`): a caller that looked a key up
    keeps the signer it got, the next lookup sees the new map."""

    def __init__(
        self,
        signers: Iterable[WalletSigner],
        *,
        configs: Mapping[str, KeyConfig] | None = None,
    ) -> None:
        entries: dict[str, WalletSigner] = {}
        for signer in signers:
            if signer.key_id in entries:
                raise ValueError(f"two signers named {signer.key_id!r}")
            entries[signer.key_id] = signer
        self._signers = entries
        # each key's config as loaded (what a reload compares); none for keys built in code
        self._configs: dict[str, KeyConfig] = dict(configs or {})
        self._listeners: list[Callable[[], None]] = []
        self._reload_lock = threading.RLock()  # re-entrant: a SIGHUP handler may run inside another
        self._closed: list[WalletSigner] = []
        metrics.register_keys(self._signers)

    @classmethod
    def from_config(cls, config: Config) -> "KeyRing":
        """Open every configured key (`signer.keyload`); on a failure of a `[keys]` entry
        close what was opened, then raise."""
        from signer.keyload import open_signers

        return cls(open_signers(config), configs=config.keys)

    def drain_rule(self, key_id: str) -> DrainRule:
        """What a rotated-out version of `key_id` may still sign (`[keys.NAME] drain`)."""
        config = self._configs.get(key_id)
        return config.drain if config is not None else "sweep"

    def subscribe(self, listener: Callable[[], None]) -> None:
        """`listener()` runs after each reload that changed the map (health re-publishes)."""
        self._listeners.append(listener)

    def reload(self, config: Config, *, self_test_timeout: float = 10.0) -> "KeyChanges":
        """Re-read `[keys]` and `[key_sources]` (signer.keyload.key_tasks): new keys are
        opened, self-tested and start serving; removed keys stop; a key whose table changed is
        re-opened and self-tested before it replaces the old one (a source's key is kept while
        the source still lists it). A key that fails to load keeps its previous signer (if it
        had one) and is reported in `failed` with the reason; the others still change. One
        swap, then the replaced and removed backends close after RELOAD_CLOSE_DELAY."""
        from signer.keyload import key_tasks

        tasks = key_tasks(config)  # a source that cannot be listed: raises, nothing changes
        with self._reload_lock:
            current = self._signers
            changes = KeyChanges()
            signers: dict[str, WalletSigner] = {}
            configs: dict[str, KeyConfig] = {}
            for task in tasks:
                key_id = task.key_id
                key_config = config.keys.get(key_id) if task.required else None
                old = current.get(key_id)
                old_config = self._configs.get(key_id)
                if old is not None and _unchanged(key_config, old_config):
                    signers[key_id] = old  # `drain` alone may change: nothing to re-open
                    if key_config is not None:
                        configs[key_id] = key_config
                    continue
                try:
                    signer = _open_tested(task, self_test_timeout)
                except Exception as exc:
                    reason = str(exc) if isinstance(exc, SignerError) else type(exc).__name__
                    log.error("reload: key %r failed to load, %s: %s", key_id,
                              "keeping its previous version" if old else "not serving it",
                              reason)
                    changes.failed.append((key_id, reason))
                    if old is not None:
                        old.health.load_failed(reason)
                        signers[key_id] = old
                        if old_config is not None:
                            configs[key_id] = old_config
                    continue
                signer.require_self_test = old.require_self_test if old else any(
                    s.require_self_test for s in current.values())
                signers[key_id] = signer
                if key_config is not None:
                    configs[key_id] = key_config
                if old is None:
                    changes.added.append((key_id, signer.address))
                else:
                    changes.changed.append((key_id, old.address, signer.address))
            for key_id, old in current.items():
                if key_id not in signers:
                    changes.removed.append((key_id, old.address))
            retired = [s for k, s in current.items() if signers.get(k) is not s]
            metrics.register_keys(signers)
            self._signers, self._configs = signers, configs
        if changes.changed_map:
            for listener in self._listeners:
                listener()
        if retired:
            self._close_later(retired)
        return changes

    def _close_later(self, signers: list[WalletSigner]) -> None:
        """Close replaced backends after RELOAD_CLOSE_DELAY, or when the ring closes if that
        comes first: each exactly once."""
        def close() -> None:
            with self._reload_lock:
                due = [s for s in signers if s in self._closed]
                self._closed = [s for s in self._closed if s not in due]
            for signer in due:
                signer.backend.close()

        with self._reload_lock:
            self._closed.extend(signers)
        timer = threading.Timer(RELOAD_CLOSE_DELAY, close)
        timer.daemon = True
        timer.start()

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
            with self._reload_lock:
                replaced, self._closed = self._closed, []
            for signer in [*self, *replaced]:
                signer.backend.close()
            return True
        closer = threading.Thread(target=self.close, name="close-backends", daemon=True)
        closer.start()
        closer.join(timeout)
        if closer.is_alive():
            log.warning("backends did not close within %.1fs; leaving them to the exit", timeout)
            return False
        return True


@dataclass
class KeyChanges:
    """What a reload did to the keys: (key_id, address) added and removed, (key_id, old
    address, new address) changed, (key_id, reason) failed to load."""

    added: list[tuple[str, str]] = field(default_factory=list)
    changed: list[tuple[str, str, str]] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def changed_map(self) -> bool:
        return bool(self.added or self.changed or self.removed or self.failed)

    def record(self) -> dict[str, object]:
        """The audit record's fields (addresses only, never a secret)."""
        return {
            "added": [{"key_id": k, "address": a} for k, a in self.added],
            "changed": [{"key_id": k, "old_address": o, "new_address": n}
                        for k, o, n in self.changed],
            "removed": [{"key_id": k, "address": a} for k, a in self.removed],
            "failed": [{"key_id": k, "reason": r[:512]} for k, r in self.failed],
        }


def _unchanged(new: KeyConfig | None, old: KeyConfig | None) -> bool:
    """Whether a reload may keep a key's signer: the same `[keys]` table (`drain` aside), or a
    key a `[key_sources]` entry still lists (found by name; re-read at a restart)."""
    if new is None or old is None:
        return new is None and old is None
    return key_config_json(new) == key_config_json(old)


def _open_tested(task: "KeyTask", timeout: float) -> WalletSigner:
    """One key opened and self-tested (a reload's new or changed key), or raise."""
    backend = task.open()
    try:
        signer = WalletSigner(task.key_id, backend, task.pinned_address)
        signer.self_test(timeout)
    except BaseException:
        backend.close()
        raise
    log.info("key %r: backend %s, address %s (reloaded from %s, self-tested)", task.key_id,
             signer.backend_name, signer.address, task.origin)
    return signer


def shown_key_id(key_id: str) -> str:
    """A caller's key id as records, logs and errors may quote it: no configured key id is
    longer than MAX_KEY_ID_LENGTH, so a longer one is cut (a stranger's 250,000-character key
    id must not become 250 KB of durable audit record)."""
    return key_id if len(key_id) <= MAX_KEY_ID_LENGTH else key_id[:MAX_KEY_ID_LENGTH] + "..."
