"""Operator actions on the shared store: freeze and thaw keys, verify and read the audit log,
migrate the schema. Each opens the configured store, acts, and closes it."""

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from signer.app.audit import AuditLog, VerifyReport, verify
from signer.app.records import Admin, AuditRecord, parse
from signer.config import Config
from signer.errors import InvalidRequest
from signer.store import FrozenKey, KeyVersionRow, Store, open_store

MAX_REASON = 512


@contextmanager
def configured_store(config: Config, *, migrate: bool = True) -> Iterator[Store]:
    store = open_store(
        config.store.url,
        password_file=config.store.password_file,
        connect_timeout=config.store.connect_timeout_seconds,
    )
    try:
        if migrate:
            store.migrate()
        yield store
    finally:
        store.close()


def audit_log(config: Config, store: Store, role: str = "cli") -> AuditLog:
    """An operator command's own chain, keyed like the service's (`store.audit_key_file`)."""
    return AuditLog(store, role=role, key=config.store.audit_key())


def migrate_store(config: Config) -> int:
    with configured_store(config) as store:
        return store.schema_version()


def freeze_key(config: Config, key_id: str, reason: str) -> None:
    """Freeze `key_id` on every replica sharing the store; audited."""
    _check_key(config, key_id)
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON or not reason.isprintable():
        raise InvalidRequest(f"--reason: 1 to {MAX_REASON} printable characters")
    with configured_store(config) as store:
        record = Admin(action="freeze", key_id=key_id, operator=_operator(),
                       details={"reason": reason})
        # the freeze and its record commit in one transaction, or neither does
        audit_log(config, store).write(
            [record], also=lambda batch, _rows: batch.freeze(key_id, reason, record.at))


def unfreeze_key(config: Config, key_id: str) -> bool:
    """Thaw `key_id`; False if it was not frozen. Audited either way."""
    _check_key(config, key_id)
    with configured_store(config) as store:
        # read first: the record must be final before the transaction that carries it (a
        # concurrent freeze of the same key between the two can make `was_frozen` stale)
        was_frozen = key_id in store.frozen_keys()
        audit_log(config, store).write(
            [Admin(action="unfreeze", key_id=key_id, operator=_operator(),
                   details={"was_frozen": was_frozen})],
            also=lambda batch, _rows: batch.unfreeze(key_id))
        return was_frozen


def frozen_keys(config: Config) -> dict[str, FrozenKey]:
    with configured_store(config) as store:
        return store.frozen_keys()


def key_versions(config: Config) -> dict[str, list[KeyVersionRow]]:
    """Every rotated key's versions, by key id."""
    found: dict[str, list[KeyVersionRow]] = {}
    with configured_store(config) as store:
        for row in store.key_versions():
            found.setdefault(row.key_id, []).append(row)
    return found


def verify_audit(
    config: Config, resume: dict[str, tuple[int, str]] | None = None
) -> VerifyReport:
    with configured_store(config, migrate=False) as store:
        return verify(store, resume, config.store.audit_key())


@dataclass(frozen=True)
class TailRecord:
    writer: str
    seq: int
    record: AuditRecord


def tail_audit(config: Config, count: int) -> list[TailRecord]:
    with configured_store(config, migrate=False) as store:
        rows = store.recent_audit(count)
    return [TailRecord(r.writer, r.seq, parse(json.loads(r.body))) for r in rows]


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _check_key(config: Config, key_id: str) -> None:
    if key_id not in config.keys:
        known = ", ".join(sorted(config.keys)) or "none"
        raise InvalidRequest(f"no key {key_id!r} in the configuration (keys: {known})")
