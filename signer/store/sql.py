"""One store, two databases: the same SQL on SQLite (embedded) and PostgreSQL (replicas).

Every public method is one short transaction; any database fault becomes `StoreUnavailable`
(callers fail closed), and the broken connection is dropped so the next call reconnects: a
database that comes back is used again without a restart. Connection strings and passwords
never appear in errors or logs.
"""

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from signer.errors import ConfigError, StoreUnavailable
from signer.secret_sources import inline_password, read_secret, redacted_url

log = logging.getLogger(__name__)

SCHEMA_VERSION = 5

# (version, statements): applied in order by `migrate`, each version once.
_MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE audit_log (
                writer TEXT NOT NULL,
                seq BIGINT NOT NULL,
                at TEXT NOT NULL,
                body TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL,
                PRIMARY KEY (writer, seq))""",
            "CREATE INDEX audit_log_at ON audit_log (at)",
            """CREATE TABLE audit_writers (
                writer TEXT PRIMARY KEY,
                started_at TEXT NOT NULL,
                ordinal BIGINT NOT NULL UNIQUE)""",
            """CREATE TABLE frozen_keys (
                key_id TEXT PRIMARY KEY,
                reason TEXT NOT NULL,
                frozen_at TEXT NOT NULL)""",
        ),
    ),
    (
        2,
        (
            # amount: {numeric} is NUMERIC(78,0) on PostgreSQL (sums in SQL), TEXT on SQLite
            # (summed exactly in Python: SQLite's integers stop at 2**63)
            # one row per reservation and budget; `counted` while inside the budget's window
            """CREATE TABLE budget_spend (
                reservation TEXT NOT NULL,
                scope TEXT NOT NULL,
                amount {numeric} NOT NULL,
                at DOUBLE PRECISION NOT NULL,
                state TEXT NOT NULL,
                counted INTEGER NOT NULL,
                PRIMARY KEY (reservation, scope))""",
            "CREATE INDEX budget_spend_scope_at ON budget_spend (scope, counted, at)",
            # the running sum of each budget's counted rows: a reservation adds its amount,
            # rows leaving the window are subtracted once, so a check costs O(1), not O(window)
            """CREATE TABLE budget_totals (
                scope TEXT PRIMARY KEY,
                window_seconds BIGINT NOT NULL,
                total {numeric} NOT NULL)""",
        ),
    ),
    (
        3,
        (
            # The next nonce the JSON-RPC door hands out per (chain, sender): replicas agree.
            """CREATE TABLE nonces (
                chain_id BIGINT NOT NULL,
                address TEXT NOT NULL,
                next_nonce BIGINT NOT NULL,
                PRIMARY KEY (chain_id, address))""",
        ),
    ),
    (
        4,
        (
            # Where each `audit prune` left its checkpoint record (in the pruning command's
            # own chain): `verify` starts every chain after the latest one's heads.
            """CREATE TABLE audit_checkpoints (
                ordinal BIGINT PRIMARY KEY,
                writer TEXT NOT NULL,
                seq BIGINT NOT NULL)""",
        ),
    ),
    (
        5,
        (
            # The versions of each rotated key id (signer.app.versions): one `active`, older
            # ones `draining` or `retired`. `source` is the JSON of the key's config (how to
            # open it); empty for version 1, which is the key as configured in [keys].
            """CREATE TABLE key_versions (
                key_id TEXT NOT NULL,
                version BIGINT NOT NULL,
                address TEXT NOT NULL,
                state TEXT NOT NULL,
                source TEXT NOT NULL,
                reason TEXT NOT NULL,
                changed_at TEXT NOT NULL,
                PRIMARY KEY (key_id, version))""",
        ),
    ),
)

# Reservations older than this are deleted as they are met (windows are at most 31 days).
BUDGET_RETENTION_SECONDS = 32 * 86400


@dataclass(frozen=True, slots=True)
class BudgetClaim:
    scope: str  # what is counted, e.g. "trader/eth_daily"
    amount: int
    limit: int
    window_seconds: int


@dataclass(frozen=True, slots=True)
class BudgetUse:
    scope: str
    spent: int  # within the window, this request included when it was reserved
    limit: int
    window_seconds: int


class BudgetExceeded(Exception):
    """A claim would take a budget over its limit; nothing was reserved."""

    def __init__(self, use: BudgetUse, amount: int) -> None:
        super().__init__(use.scope)
        self.use = use
        self.amount = amount


class AuditRow(NamedTuple):
    """One stored record (a tuple: a chain of millions is read without building objects)."""

    writer: str
    seq: int
    at: str  # ISO 8601 UTC, also inside body (where the hash covers it)
    body: str  # canonical JSON of the record
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class FrozenKey:
    key_id: str
    reason: str
    frozen_at: str


@dataclass(frozen=True, slots=True)
class KeyVersionRow:
    """One version of a key id as the store holds it (see signer.app.versions)."""

    key_id: str
    version: int
    address: str  # EIP-55
    state: str  # "active", "draining" or "retired"
    source: str  # JSON of the version's key config; "" for version 1 (the [keys] entry)
    reason: str  # why it entered its state (the retirement's reason)
    changed_at: str


class VersionConflict(Exception):
    """A rotation or retirement that the stored versions do not allow (message says why)."""


def _audit_row(row: Sequence[Any]) -> AuditRow:
    return AuditRow._make(row)  # both drivers return TEXT as str and BIGINT as int


class _Connection(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...
    def close(self) -> None: ...


class Store:
    """Audit rows, frozen keys (and, as they arrive, budgets and nonces) in one database."""

    def __init__(self, url: str, dialect: "_Dialect", pool_size: int = 4) -> None:
        self.url = url
        self._dialect = dialect
        self._idle: list[_Connection] = []  # newest last (LIFO); append/pop are atomic
        self._slots = threading.BoundedSemaphore(pool_size)

    @property
    def kind(self) -> str:
        return self._dialect.name

    # -- schema ---------------------------------------------------------------------------

    def migrate(self) -> int:
        """Create or upgrade the schema; returns the version now in place. Safe to run from
        several processes at once (the dialect serializes migrations)."""
        with self._transaction(lock=True) as tx:
            tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            row = tx.execute("SELECT max(version) FROM schema_version").fetchone()
            current = int(row[0]) if row and row[0] is not None else 0
            for version, statements in _MIGRATIONS:
                if version <= current:
                    continue
                for statement in statements:
                    tx.execute(statement.format(numeric=self._dialect.numeric_type))
                for statement in self._dialect.migration(version):
                    tx.execute(statement)
                tx.execute(self._sql("INSERT INTO schema_version (version) VALUES (?)"), (version,))
                current = version
        if current > SCHEMA_VERSION:
            raise ConfigError(
                f"store schema version {current} is newer than this wallet-signer "
                f"({SCHEMA_VERSION}): upgrade the service"
            )
        return current

    def schema_version(self) -> int:
        with self._transaction() as tx:
            try:
                row = tx.execute("SELECT max(version) FROM schema_version").fetchone()
            except self._dialect.programming_errors:
                return 0
        return int(row[0]) if row and row[0] is not None else 0

    # -- audit ----------------------------------------------------------------------------

    def append_audit(
        self, rows: Sequence[AuditRow], new_writer: tuple[str, str] | None = None
    ) -> None:
        """Append rows in one transaction (registering `new_writer` = (writer, started_at)
        first, when given): all of it is durable on return, or none of it."""
        with self.batch(lock=new_writer is not None) as batch:
            if new_writer is not None:
                batch.register_writer(*new_writer)
            batch.append(rows)

    @contextmanager
    def batch(self, lock: bool = False, durable: bool = True) -> Iterator["Batch"]:
        """One transaction for several operations (the audit's group commit: records and
        the budget reservations they carry commit together, or not at all). `durable=False`
        commits without waiting for the disk (SQLite: synchronous=NORMAL in WAL mode;
        PostgreSQL: synchronous_commit=off): the commit is visible at once, and the next
        durable commit makes it durable too (docs/audit-durability.md)."""
        with self._transaction(lock=lock, durable=durable, pipeline=True) as tx:
            yield self._dialect.make_batch(self, tx)

    def chain_head(self, writer: str) -> tuple[int, str] | None:
        with self._transaction() as tx:
            row = tx.execute(
                self._sql(
                    "SELECT seq, hash FROM audit_log WHERE writer = ? ORDER BY seq DESC LIMIT 1"
                ),
                (writer,),
            ).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def chain_heads(self) -> dict[str, tuple[int, str]]:
        """The last (seq, hash) of every writer's chain (one index lookup per writer: the
        log's size does not matter)."""
        heads: dict[str, tuple[int, str]] = {}
        with self._transaction() as tx:
            for (writer,) in tx.execute("SELECT writer FROM audit_writers").fetchall():
                row = tx.execute(
                    self._sql("SELECT seq, hash FROM audit_log WHERE writer = ? "
                              "ORDER BY seq DESC LIMIT 1"),
                    (writer,),
                ).fetchone()
                if row is not None:
                    heads[str(writer)] = (int(row[0]), str(row[1]))
        return heads

    def audit_cut(self, before: str) -> dict[str, tuple[int, str]]:
        """Per writer, the last record of the longest prefix of its chain whose records are
        all older than `before` (ISO time), keeping at least the chain's last record (a
        running writer links its next record to it): (seq, hash), for writers with any."""
        cut: dict[str, tuple[int, str]] = {}
        with self._transaction() as tx:
            for (writer,) in tx.execute("SELECT writer FROM audit_writers").fetchall():
                last = tx.execute(
                    self._sql("SELECT max(seq) FROM audit_log WHERE writer = ?"), (writer,)
                ).fetchone()
                if last is None or last[0] is None:
                    continue
                first_kept = tx.execute(
                    self._sql("SELECT min(seq) FROM audit_log WHERE writer = ? AND at >= ?"),
                    (writer, before),
                ).fetchone()
                keep = int(first_kept[0]) if first_kept[0] is not None else int(last[0])
                row = tx.execute(
                    self._sql("SELECT seq, hash FROM audit_log WHERE writer = ? AND seq < ? "
                              "ORDER BY seq DESC LIMIT 1"),
                    (writer, min(keep, int(last[0]))),
                ).fetchone()
                if row is not None:
                    cut[str(writer)] = (int(row[0]), str(row[1]))
        return cut

    def writers(self) -> list[str]:
        """Every writer that ever registered, in registration order."""
        with self._transaction() as tx:
            rows = tx.execute("SELECT writer FROM audit_writers ORDER BY ordinal").fetchall()
        return [str(r[0]) for r in rows]

    def audit_writers_in_log(self) -> list[str]:
        """Every writer that has rows (a writer with rows but no registration was inserted)."""
        with self._transaction() as tx:
            # a skip scan of the primary key: one lookup per writer, not a pass over the log
            rows = tx.execute(
                "WITH RECURSIVE w(writer) AS (SELECT min(writer) FROM audit_log UNION ALL "
                "SELECT (SELECT min(a.writer) FROM audit_log a WHERE a.writer > w.writer) "
                "FROM w WHERE w.writer IS NOT NULL) "
                "SELECT writer FROM w WHERE writer IS NOT NULL"
            ).fetchall()
        return [str(r[0]) for r in rows]

    def audit_row(self, writer: str, seq: int) -> AuditRow | None:
        with self._transaction() as tx:
            row = tx.execute(
                self._sql(
                    "SELECT writer, seq, at, body, prev_hash, hash FROM audit_log "
                    "WHERE writer = ? AND seq = ?"
                ),
                (writer, seq),
            ).fetchone()
        return _audit_row(row) if row else None

    def audit_rows(self, writer: str, batch: int = 5000, *, after: int = -1,
                   through: int | None = None) -> Iterator[AuditRow]:
        """One writer's rows in stored order (by seq) after seq `after` (through seq
        `through`), fetched in batches: memory does not grow with the chain."""
        while True:
            if through is not None:
                batch = max(0, min(batch, through - after))
                if batch == 0:
                    return
            with self._transaction() as tx:
                rows = tx.execute(
                    self._sql(
                        "SELECT writer, seq, at, body, prev_hash, hash FROM audit_log "
                        "WHERE writer = ? AND seq > ? ORDER BY seq LIMIT ?"
                    ),
                    (writer, after, batch),
                ).fetchall()
            yield from map(AuditRow._make, rows)
            if len(rows) < batch:
                return
            after = int(rows[-1][1])

    def latest_checkpoint(self) -> tuple[str, int] | None:
        """(writer, seq) of the latest prune checkpoint record, if any prune ran."""
        with self._transaction() as tx:
            try:
                row = tx.execute(
                    "SELECT writer, seq FROM audit_checkpoints ORDER BY ordinal DESC LIMIT 1"
                ).fetchone()
            except self._dialect.programming_errors:
                return None  # a store from before schema 4 (verify does not migrate)
        return (str(row[0]), int(row[1])) if row else None

    def recent_audit(self, limit: int) -> list[AuditRow]:
        """The newest `limit` rows of every writer (the caller orders them by time)."""
        with self._transaction() as tx:
            rows = tx.execute(
                self._sql(
                    "SELECT writer, seq, at, body, prev_hash, hash FROM audit_log "
                    "ORDER BY at DESC, writer, seq DESC LIMIT ?"
                ),
                (limit,),
            ).fetchall()
        return [_audit_row(r) for r in reversed(rows)]

    # -- freeze ---------------------------------------------------------------------------

    def freeze(self, key_id: str, reason: str, frozen_at: str) -> None:
        with self._transaction() as tx:
            tx.execute(
                self._sql(
                    "INSERT INTO frozen_keys (key_id, reason, frozen_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (key_id) DO UPDATE SET reason = excluded.reason, "
                    "frozen_at = excluded.frozen_at"
                ),
                (key_id, reason, frozen_at),
            )

    def unfreeze(self, key_id: str) -> bool:
        with self._transaction() as tx:
            cursor = tx.execute(self._sql("DELETE FROM frozen_keys WHERE key_id = ?"), (key_id,))
            return bool(cursor.rowcount)

    def frozen_keys(self) -> dict[str, FrozenKey]:
        with self._transaction() as tx:
            rows = tx.execute("SELECT key_id, reason, frozen_at FROM frozen_keys").fetchall()
        return {str(r[0]): FrozenKey(str(r[0]), str(r[1]), str(r[2])) for r in rows}

    # -- key versions ---------------------------------------------------------------------

    def key_versions(self) -> list[KeyVersionRow]:
        """Every stored version of every key id, by key id and version."""
        with self._transaction() as tx:
            rows = tx.execute(
                "SELECT key_id, version, address, state, source, reason, changed_at "
                "FROM key_versions ORDER BY key_id, version"
            ).fetchall()
        return [KeyVersionRow(str(r[0]), int(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]),
                              str(r[6])) for r in rows]

    def rotate_key(self, first: KeyVersionRow, new: KeyVersionRow) -> KeyVersionRow:
        """Make `new` the active version of its key id and put the active one into draining,
        in one transaction. `first` is version 1 (the configured key), recorded by the first
        rotation. Returns the version that was active. VersionConflict when `new.version` is
        not the next one (another rotation won) or its address is already a version's."""
        with self._transaction() as tx:
            self._dialect.lock_key(tx, "key_versions:" + new.key_id)
            rows = tx.execute(
                self._sql("SELECT version, address, state FROM key_versions WHERE key_id = ? "
                          "ORDER BY version"), (new.key_id,),
            ).fetchall()
            if not rows:
                self._insert_version(tx, first)
                rows = [(first.version, first.address, first.state)]
            if new.version != int(rows[-1][0]) + 1:
                raise VersionConflict(
                    f"key {new.key_id!r} is at version {rows[-1][0]}: version {new.version} "
                    "is not the next one (another rotation ran meanwhile)")
            for version, address, _ in rows:
                if str(address).lower() == new.address.lower():
                    raise VersionConflict(
                        f"key {new.key_id!r}: {new.address} is already its version {version}")
            active = [r for r in rows if r[2] == "active"]
            tx.execute(
                self._sql("UPDATE key_versions SET state = 'draining', changed_at = ? "
                          "WHERE key_id = ? AND state = 'active'"),
                (new.changed_at, new.key_id),
            )
            self._insert_version(tx, new)
        previous = active[0] if active else rows[-1]
        return KeyVersionRow(new.key_id, int(previous[0]), str(previous[1]), "draining", "", "",
                             new.changed_at)

    def record_first_version(self, first: KeyVersionRow) -> KeyVersionRow:
        """Record version 1 of a key id (active) unless the key id has versions already;
        returns the stored version 1. `keys rotate` records a pinned version 1 this way before
        it writes the next version where version 1's config would otherwise find it."""
        with self._transaction() as tx:
            self._dialect.lock_key(tx, "key_versions:" + first.key_id)
            row = tx.execute(
                self._sql("SELECT key_id, version, address, state, source, reason, changed_at "
                          "FROM key_versions WHERE key_id = ? ORDER BY version"), (first.key_id,),
            ).fetchone()
            if row is None:
                self._insert_version(tx, first)
                return first
        return KeyVersionRow(str(row[0]), int(row[1]), str(row[2]), str(row[3]), str(row[4]),
                             str(row[5]), str(row[6]))

    def retire_key_version(self, key_id: str, version: int, reason: str, at: str) -> KeyVersionRow:
        """Retire a draining version for good; VersionConflict if it is unknown, active or
        retired already. Returns the retired row."""
        with self._transaction() as tx:
            self._dialect.lock_key(tx, "key_versions:" + key_id)
            row = tx.execute(
                self._sql("SELECT address, state, source FROM key_versions "
                          "WHERE key_id = ? AND version = ?"), (key_id, version),
            ).fetchone()
            if row is None:
                raise VersionConflict(f"key {key_id!r} has no version {version} (rotate first)")
            if row[1] == "active":
                raise VersionConflict(
                    f"key {key_id!r} version {version} is the active one: rotate first")
            if row[1] == "retired":
                raise VersionConflict(f"key {key_id!r} version {version} is retired already")
            tx.execute(
                self._sql("UPDATE key_versions SET state = 'retired', reason = ?, changed_at = ? "
                          "WHERE key_id = ? AND version = ?"),
                (reason, at, key_id, version),
            )
        return KeyVersionRow(key_id, version, str(row[0]), "retired", str(row[2]), reason, at)

    def _insert_version(self, tx: _Connection, row: KeyVersionRow) -> None:
        tx.execute(
            self._sql("INSERT INTO key_versions (key_id, version, address, state, source, "
                      "reason, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?)"),
            (row.key_id, row.version, row.address, row.state, row.source, row.reason,
             row.changed_at),
        )

    # -- budgets --------------------------------------------------------------------------

    def reserve(
        self, reservation: str, claims: Sequence[BudgetClaim], now: float
    ) -> list[BudgetUse]:
        """Reserve every claim or none (see `Batch.reserve`), in a transaction of its own."""
        with self.batch() as batch:
            results = batch.reserve_many([(reservation, claims, now)])
        (result,) = results.get()
        if isinstance(result, BudgetExceeded):
            raise result
        return result

    def settle(self, reservation: str) -> None:
        with self.batch() as batch:
            batch.finish_many(settle=[reservation], release=[])

    def release(self, reservation: str) -> None:
        with self.batch() as batch:
            batch.finish_many(settle=[], release=[reservation])

    def budget_spent(self, scope: str, window_seconds: int, now: float) -> int:
        with self._transaction() as tx:
            return self._dialect.make_batch(self, tx).spent(scope, window_seconds, now)

    # -- nonces (JSON-RPC eth_sendTransaction) ---------------------------------------------

    def next_nonce(self, chain_id: int, address: bytes, floor: int) -> int:
        """Reserve a nonce for `address` on `chain_id`: the stored next one, or `floor` (the
        node's pending count) if that is higher. One atomic statement, so concurrent callers
        on any replica never get the same nonce."""
        with self._transaction() as tx:
            row = tx.execute(
                self._sql(
                    "INSERT INTO nonces (chain_id, address, next_nonce) VALUES (?, ?, ?) "
                    "ON CONFLICT (chain_id, address) DO UPDATE SET next_nonce = CASE "
                    "WHEN nonces.next_nonce >= excluded.next_nonce THEN nonces.next_nonce + 1 "
                    "ELSE excluded.next_nonce END RETURNING next_nonce - 1"
                ),
                (chain_id, "0x" + address.hex(), floor + 1),
            ).fetchone()
        return int(row[0])

    def issued_nonce(self, chain_id: int, address: bytes) -> int | None:
        """The next nonce the JSON-RPC door would hand `address` on `chain_id` (every lower
        one was issued), or None if it never handed one out."""
        with self._transaction() as tx:
            row = tx.execute(
                self._sql("SELECT next_nonce FROM nonces WHERE chain_id = ? AND address = ?"),
                (chain_id, "0x" + address.hex()),
            ).fetchone()
        return None if row is None else int(row[0])

    def release_nonce(self, chain_id: int, address: bytes, nonce: int) -> bool:
        """Give back `nonce` if it is still the last one handed out (its transaction never
        reached the node); False when a later nonce was reserved meanwhile."""
        with self._transaction() as tx:
            cursor = tx.execute(
                self._sql(
                    "UPDATE nonces SET next_nonce = ? "
                    "WHERE chain_id = ? AND address = ? AND next_nonce = ?"
                ),
                (nonce, chain_id, "0x" + address.hex(), nonce + 1),
            )
            return bool(cursor.rowcount)

    # -- plumbing -------------------------------------------------------------------------

    def close(self) -> None:
        while True:
            try:
                self._idle.pop().close()
            except IndexError:
                return

    def _sql(self, statement: str) -> str:
        return self._dialect.placeholders(statement)

    @contextmanager
    def _transaction(
        self, lock: bool = False, durable: bool = True, pipeline: bool = False
    ) -> Iterator[_Connection]:
        """A connection inside one transaction, committed on success and rolled back on error.
        A database error drops the connection and raises StoreUnavailable. `pipeline`: the
        statements are sent without waiting for each one's answer, and answered together at
        the end (PostgreSQL: one round trip for the whole transaction, unless a statement's
        rows are read inside it)."""
        if not self._slots.acquire(timeout=self._dialect.acquire_timeout):
            raise StoreUnavailable("state store: no connection free in time")
        connection: _Connection | None = None
        try:
            try:
                connection = self._idle.pop()
            except IndexError:
                connection = self._dialect.connect()
            try:
                with self._dialect.pipeline(connection, pipeline):
                    self._dialect.begin(connection, lock, durable)
                    yield connection
                    self._dialect.commit(connection)
            except BaseException:
                self._dialect.rollback(connection)
                raise
            self._idle.append(connection)
            connection = None
        except self._dialect.operational_errors as exc:
            log.warning("state store (%s) fault: %s", self._dialect.name, type(exc).__name__)
            raise StoreUnavailable(
                f"state store ({self._dialect.name}) unavailable: nothing was signed"
            ) from None
        finally:
            if connection is not None:
                try:
                    connection.close()
                except Exception:  # noqa: S110 - a broken connection may fail to close too
                    pass
            self._slots.release()

    def __repr__(self) -> str:
        return f"Store({self._dialect.name})"


_AUDIT_INSERT = "INSERT INTO audit_log (writer, seq, at, body, prev_hash, hash) VALUES "


class Results:
    """What `Batch.reserve_many` decided, available once the batch has committed."""

    def __init__(self, get: Callable[[], list[list[BudgetUse] | BudgetExceeded]]) -> None:
        self.get = get


class Batch:
    """Operations inside one store transaction (from `Store.batch`)."""

    def __init__(self, store: Store, tx: _Connection) -> None:
        self._store = store
        self._tx = tx
        self._sql = store._sql
        self._dialect = store._dialect

    def register_writer(self, writer: str, started_at: str) -> None:
        self._tx.execute(
            self._sql("INSERT INTO audit_writers (writer, started_at, ordinal) "
                      "SELECT ?, ?, coalesce(max(ordinal), 0) + 1 FROM audit_writers"),
            (writer, started_at),
        )

    def reserve_many(
        self, reservations: Sequence[tuple[str, Sequence[BudgetClaim], float]]
    ) -> "Results":
        """`reserve` for each (reservation, claims, now), in order; each either reserves all
        its claims or none. Results (uses or the BudgetExceeded) are read after the commit."""
        results: list[list[BudgetUse] | BudgetExceeded] = []
        for reservation, claims, now in reservations:
            try:
                results.append(self.reserve(reservation, claims, now))
            except BudgetExceeded as exc:
                results.append(exc)
        return Results(lambda: results)

    def finish_many(self, settle: Sequence[str], release: Sequence[str]) -> None:
        """Settle (a signature exists) and release (none was made) reservations."""
        for reservation in settle:
            self.settle(reservation)
        for reservation in release:
            self.release(reservation)

    def freeze(self, key_id: str, reason: str, frozen_at: str) -> None:
        """`Store.freeze` inside this transaction (with the admin record that says so)."""
        self._tx.execute(
            self._sql(
                "INSERT INTO frozen_keys (key_id, reason, frozen_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key_id) DO UPDATE SET reason = excluded.reason, "
                "frozen_at = excluded.frozen_at"
            ),
            (key_id, reason, frozen_at),
        )

    def unfreeze(self, key_id: str) -> None:
        """`Store.unfreeze` inside this transaction (with the admin record that says so)."""
        self._tx.execute(self._sql("DELETE FROM frozen_keys WHERE key_id = ?"), (key_id,))

    def delete_audit_through(self, writer: str, seq: int) -> None:
        """Remove `writer`'s records up to `seq` (`audit prune`, once exported)."""
        self._tx.execute(
            self._sql("DELETE FROM audit_log WHERE writer = ? AND seq <= ?"), (writer, seq)
        )

    def add_checkpoint(self, writer: str, seq: int) -> None:
        """Point at the checkpoint record (writer, seq) a prune just wrote."""
        self._tx.execute(
            self._sql("INSERT INTO audit_checkpoints (ordinal, writer, seq) "
                      "SELECT coalesce(max(ordinal), 0) + 1, ?, ? FROM audit_checkpoints"),
            (writer, seq),
        )

    def drop_budget_rows(self, before: float) -> None:
        """Budget rows older than `before` that no window counts any more (a prune)."""
        self._tx.execute(
            self._sql("DELETE FROM budget_spend WHERE counted = 0 AND at < ?"), (before,)
        )

    def append(self, rows: Sequence[AuditRow]) -> None:
        if rows:  # AuditRow is a tuple in the columns' order
            self._dialect.insert_many(self._tx, _AUDIT_INSERT, rows)

    def reserve(
        self, reservation: str, claims: Sequence[BudgetClaim], now: float
    ) -> list[BudgetUse]:
        """Reserve every claim or none, atomically across replicas: each budget is locked
        (SQLite: the database's write lock; PostgreSQL: an advisory lock per budget, held to
        the end of the transaction) while its window is summed; the claims are inserted only
        when all fit. Raises BudgetExceeded naming the first budget that would go over."""
        uses: list[BudgetUse] = []
        for claim in sorted(claims, key=lambda c: c.scope):  # one lock order: no deadlock
            self._dialect.lock_key(self._tx, "budget:" + claim.scope)
            spent = self.window_total(claim.scope, claim.window_seconds, now)
            if spent + claim.amount > claim.limit:
                raise BudgetExceeded(
                    BudgetUse(claim.scope, spent, claim.limit, claim.window_seconds), claim.amount
                )
            uses.append(
                BudgetUse(claim.scope, spent + claim.amount, claim.limit, claim.window_seconds)
            )
        for claim, use in zip(sorted(claims, key=lambda c: c.scope), uses, strict=True):
            self._tx.execute(
                self._sql(
                    "INSERT INTO budget_spend (reservation, scope, amount, at, state, counted) "
                    "VALUES (?, ?, ?, ?, 'reserved', 1)"
                ),
                (reservation, claim.scope, self._dialect.to_numeric(claim.amount), now),
            )
            self._set_total(claim.scope, claim.window_seconds, use.spent)
        return uses

    def spent(self, scope: str, window_seconds: int, now: float) -> int:
        """`window_total` under the budget's lock (a read outside any reservation)."""
        self._dialect.lock_key(self._tx, "budget:" + scope)
        return self.window_total(scope, window_seconds, now)

    def window_total(self, scope: str, window_seconds: int, now: float) -> int:
        """What `scope` has spent in the `window_seconds` before `now`, bringing its running
        total up to date: rows that left the window are subtracted (once). A window the
        total was not kept for (new budget, changed window) is summed from the rows."""
        since = now - window_seconds
        row = self._tx.execute(
            self._sql("SELECT window_seconds, total FROM budget_totals WHERE scope = ?"), (scope,)
        ).fetchone()
        if row is None or int(row[0]) != window_seconds:
            self._tx.execute(
                self._sql("DELETE FROM budget_spend WHERE scope = ? AND at < ?"),
                (scope, now - BUDGET_RETENTION_SECONDS),
            )
            self._tx.execute(
                self._sql("UPDATE budget_spend SET counted = CASE WHEN at > ? THEN 1 ELSE 0 END "
                          "WHERE scope = ?"),
                (since, scope),
            )
            total = self._sum(scope, "counted = 1")
        else:
            total = int(row[1])
            expired = self._sum(scope, "counted = 1 AND at <= ?", since)
            if expired:
                self._tx.execute(
                    self._sql("UPDATE budget_spend SET counted = 0 "
                              "WHERE scope = ? AND counted = 1 AND at <= ?"),
                    (scope, since),
                )
                total -= expired
            else:
                return total
        self._set_total(scope, window_seconds, total)
        return total

    def _sum(self, scope: str, condition: str, *params: Any) -> int:
        rows = self._tx.execute(
            self._sql(f"SELECT amount FROM budget_spend WHERE scope = ? AND {condition}"),  # noqa: S608 - fixed conditions
            (scope, *params),
        ).fetchall()
        return sum(int(r[0]) for r in rows)

    def _set_total(self, scope: str, window_seconds: int, total: int) -> None:
        self._tx.execute(
            self._sql(
                "INSERT INTO budget_totals (scope, window_seconds, total) VALUES (?, ?, ?) "
                "ON CONFLICT (scope) DO UPDATE SET window_seconds = excluded.window_seconds, "
                "total = excluded.total"
            ),
            (scope, window_seconds, self._dialect.to_numeric(total)),
        )

    def settle(self, reservation: str) -> None:
        """A signature exists: the reservation is spent for good."""
        self._tx.execute(
            self._sql("UPDATE budget_spend SET state = 'spent' WHERE reservation = ?"),
            (reservation,),
        )

    def release(self, reservation: str) -> None:
        """No signature was made: give the reservation back."""
        rows = self._tx.execute(
            self._sql("SELECT scope, amount FROM budget_spend "
                      "WHERE reservation = ? AND counted = 1"),
            (reservation,),
        ).fetchall()
        for scope, amount in rows:
            self._dialect.lock_key(self._tx, "budget:" + str(scope))
            self._subtract(str(scope), int(amount))
        self._tx.execute(
            self._sql("DELETE FROM budget_spend WHERE reservation = ?"), (reservation,)
        )

    def _subtract(self, scope: str, amount: int) -> None:
        row = self._tx.execute(
            self._sql("SELECT total FROM budget_totals WHERE scope = ?"), (scope,)
        ).fetchone()
        if row is not None:
            self._tx.execute(
                self._sql("UPDATE budget_totals SET total = ? WHERE scope = ?"),
                (self._dialect.to_numeric(int(row[0]) - amount), scope),
            )


class _PostgresBatch(Batch):
    """The group commit on PostgreSQL in one round trip: the transaction runs in pipeline
    mode, so no statement here may wait for its answer. Reservations are decided inside the
    database (`ws_reserve`, the same arithmetic as `Batch.reserve`) and read after COMMIT."""

    def reserve_many(
        self, reservations: Sequence[tuple[str, Sequence[BudgetClaim], float]]
    ) -> Results:
        cursors = []
        for reservation, claims, now in reservations:
            ordered = sorted(claims, key=lambda c: c.scope)  # one lock order: no deadlock
            cursor = self._tx.cursor()  # type: ignore[attr-defined]
            cursor.execute(
                "SELECT out_scope, out_spent, out_exceeded FROM ws_reserve(%s, %s::text[], "
                "%s::numeric[], %s::numeric[], %s::bigint[], %s)",
                (reservation, [c.scope for c in ordered],
                 [self._dialect.to_numeric(c.amount) for c in ordered],
                 [self._dialect.to_numeric(c.limit) for c in ordered],
                 [c.window_seconds for c in ordered], now),
            )
            cursors.append((ordered, cursor))

        def get() -> list[list[BudgetUse] | BudgetExceeded]:
            results: list[list[BudgetUse] | BudgetExceeded] = []
            for ordered, cursor in cursors:
                claims = {c.scope: c for c in ordered}
                uses: list[BudgetUse] = []
                exceeded: BudgetExceeded | None = None
                for scope, spent, over in cursor.fetchall():
                    c = claims[str(scope)]
                    use = BudgetUse(c.scope, int(spent), c.limit, c.window_seconds)
                    if over:
                        exceeded = BudgetExceeded(use, c.amount)
                    uses.append(use)
                results.append(exceeded if exceeded is not None else uses)
            return results

        return Results(get)

    def spent(self, scope: str, window_seconds: int, now: float) -> int:
        self._dialect.lock_key(self._tx, "budget:" + scope)
        row = self._tx.execute(
            "SELECT ws_window_total(%s, %s, %s)", (scope, window_seconds, now)
        ).fetchone()
        return int(row[0])

    def finish_many(self, settle: Sequence[str], release: Sequence[str]) -> None:
        if settle:
            self._tx.execute(
                "UPDATE budget_spend SET state = 'spent' WHERE reservation = ANY(%s::text[])",
                (list(settle),),
            )
        if release:
            self._tx.execute("SELECT ws_release(%s::text[])", (list(release),))


# The budget arithmetic of `Batch.reserve` / `window_total` / `release`, statement for
# statement, as functions: a group commit on PostgreSQL sends them in its one round trip.
_PG_FUNCTIONS = (
    f"""CREATE OR REPLACE FUNCTION ws_window_total(
        p_scope text, p_window bigint, p_now double precision) RETURNS numeric
    LANGUAGE plpgsql AS $$
    DECLARE
        v_since double precision := p_now - p_window;
        v_window bigint;
        v_total numeric;
        v_expired numeric;
    BEGIN
        SELECT t.window_seconds, t.total INTO v_window, v_total
            FROM budget_totals t WHERE t.scope = p_scope;
        IF NOT FOUND OR v_window <> p_window THEN
            DELETE FROM budget_spend s
                WHERE s.scope = p_scope AND s.at < p_now - {BUDGET_RETENTION_SECONDS};
            UPDATE budget_spend s SET counted = CASE WHEN s.at > v_since THEN 1 ELSE 0 END
                WHERE s.scope = p_scope;
            SELECT coalesce(sum(s.amount), 0) INTO v_total
                FROM budget_spend s WHERE s.scope = p_scope AND s.counted = 1;
        ELSE
            SELECT coalesce(sum(s.amount), 0) INTO v_expired FROM budget_spend s
                WHERE s.scope = p_scope AND s.counted = 1 AND s.at <= v_since;
            IF v_expired = 0 THEN
                RETURN v_total;
            END IF;
            UPDATE budget_spend s SET counted = 0
                WHERE s.scope = p_scope AND s.counted = 1 AND s.at <= v_since;
            v_total := v_total - v_expired;
        END IF;
        INSERT INTO budget_totals (scope, window_seconds, total)
            VALUES (p_scope, p_window, v_total)
            ON CONFLICT (scope) DO UPDATE SET window_seconds = excluded.window_seconds,
                total = excluded.total;
        RETURN v_total;
    END $$""",  # noqa: S608 - a constant, no input
    """CREATE OR REPLACE FUNCTION ws_reserve(
        p_reservation text, p_scopes text[], p_amounts numeric[], p_limits numeric[],
        p_windows bigint[], p_now double precision)
    RETURNS TABLE (out_scope text, out_spent numeric, out_exceeded boolean)
    LANGUAGE plpgsql AS $$
    DECLARE
        n int := coalesce(array_length(p_scopes, 1), 0);
        v_spent numeric;
        v_after numeric[] := ARRAY[]::numeric[];
    BEGIN
        -- claims come sorted by scope: every transaction takes the locks in one order
        FOR i IN 1..n LOOP
            PERFORM pg_advisory_xact_lock(hashtextextended('budget:' || p_scopes[i], 0));
            v_spent := ws_window_total(p_scopes[i], p_windows[i], p_now);
            IF v_spent + p_amounts[i] > p_limits[i] THEN
                out_scope := p_scopes[i]; out_spent := v_spent; out_exceeded := true;
                RETURN NEXT;
                RETURN;  -- nothing of this reservation is inserted
            END IF;
            v_after := v_after || (v_spent + p_amounts[i]);
        END LOOP;
        FOR i IN 1..n LOOP
            INSERT INTO budget_spend (reservation, scope, amount, at, state, counted)
                VALUES (p_reservation, p_scopes[i], p_amounts[i], p_now, 'reserved', 1);
            INSERT INTO budget_totals (scope, window_seconds, total)
                VALUES (p_scopes[i], p_windows[i], v_after[i])
                ON CONFLICT (scope) DO UPDATE SET window_seconds = excluded.window_seconds,
                    total = excluded.total;
            out_scope := p_scopes[i]; out_spent := v_after[i]; out_exceeded := false;
            RETURN NEXT;
        END LOOP;
    END $$""",
    """CREATE OR REPLACE FUNCTION ws_release(p_reservations text[]) RETURNS void
    LANGUAGE plpgsql AS $$
    DECLARE
        r record;
    BEGIN
        FOR r IN SELECT s.scope, s.amount FROM budget_spend s
                WHERE s.reservation = ANY(p_reservations) AND s.counted = 1
                ORDER BY s.scope LOOP
            PERFORM pg_advisory_xact_lock(hashtextextended('budget:' || r.scope, 0));
            UPDATE budget_totals t SET total = t.total - r.amount WHERE t.scope = r.scope;
        END LOOP;
        DELETE FROM budget_spend s WHERE s.reservation = ANY(p_reservations);
    END $$""",
)


class _Dialect:
    name: str
    operational_errors: tuple[type[BaseException], ...]
    programming_errors: tuple[type[BaseException], ...]
    acquire_timeout = 10.0
    numeric_type = "TEXT"

    def lock_key(self, connection: _Connection, key: str) -> None:
        """Serialize transactions on `key` until this one ends (SQLite: already serialized)."""

    def execute_many(
        self, connection: _Connection, statement: str, params: Sequence[Sequence[Any]]
    ) -> None:
        connection.executemany(statement, params)  # type: ignore[attr-defined]

    def insert_many(
        self, connection: _Connection, insert: str, rows: Sequence[Sequence[Any]]
    ) -> None:
        """`insert` ("INSERT INTO t (columns) VALUES ") for every row: one prepared statement,
        run once a row."""
        marks = ", ".join(["?"] * len(rows[0]))
        self.execute_many(connection, self.placeholders(f"{insert}({marks})"), rows)

    def to_numeric(self, value: int) -> Any:
        return str(value)


    def connect(self) -> _Connection:
        raise NotImplementedError

    def placeholders(self, statement: str) -> str:
        return statement

    def begin(self, connection: _Connection, lock: bool, durable: bool = True) -> None:
        connection.execute("BEGIN")

    def make_batch(self, store: Store, tx: _Connection) -> "Batch":
        return Batch(store, tx)

    def migration(self, version: int) -> tuple[str, ...]:
        """Statements of schema `version` for this database only."""
        return ()

    def pipeline(self, connection: _Connection, enabled: bool) -> ContextManager[Any]:
        return nullcontext()

    def commit(self, connection: _Connection) -> None:
        connection.execute("COMMIT")

    def rollback(self, connection: _Connection) -> None:
        try:
            connection.execute("ROLLBACK")
        except Exception:  # noqa: S110 - the connection may already be gone
            pass


_SQLITE_VARIABLES = 999  # per statement: every SQLite build allows at least this many


class _SqliteConnection(sqlite3.Connection):
    """A connection that remembers its `synchronous` setting (FULL when True)."""

    synchronous_full: bool | None = None


class _Sqlite(_Dialect):
    """WAL journal, synchronous=FULL: a commit is on disk (fsync) before it returns, so an
    audit record survives a power loss, not only a process kill."""

    name = "sqlite"
    operational_errors = (sqlite3.OperationalError, sqlite3.DatabaseError)
    programming_errors = (sqlite3.OperationalError,)

    def __init__(self, path: Path) -> None:
        self.path = path

    def connect(self) -> _Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        connection = sqlite3.connect(
            self.path, timeout=10.0, isolation_level=None, check_same_thread=False,
            factory=_SqliteConnection,
        )
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.synchronous_full = True
        connection.execute("PRAGMA busy_timeout=10000")
        return connection

    def begin(self, connection: _Connection, lock: bool, durable: bool = True) -> None:
        # FULL: the commit fsyncs the WAL (and with it every earlier commit in the file);
        # NORMAL: the commit is in the WAL, visible to all, on disk at the next FULL commit
        # or checkpoint. Per connection: set before a transaction that needs the other one
        # (every statement costs a release and re-acquire of the GIL).
        assert isinstance(connection, _SqliteConnection)
        if connection.synchronous_full is not durable:
            connection.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            connection.synchronous_full = durable
        # IMMEDIATE takes the write lock up front: no deadlock upgrading a read to a write
        connection.execute("BEGIN IMMEDIATE")

    def insert_many(
        self, connection: _Connection, insert: str, rows: Sequence[Sequence[Any]]
    ) -> None:
        """One multi-row INSERT per chunk of rows: one statement step (and one release of the
        GIL) for a whole group commit, not one per row."""
        width = len(rows[0])
        per = _SQLITE_VARIABLES // width
        for start in range(0, len(rows), per):
            chunk = rows[start:start + per]
            marks = "(" + ", ".join(["?"] * width) + ")"
            connection.execute(f"{insert}{', '.join([marks] * len(chunk))}",
                               [value for row in chunk for value in row])


class _Postgres(_Dialect):
    name = "postgresql"

    def __init__(self, url: str, password: str | None, connect_timeout: float) -> None:
        import psycopg

        self._psycopg = psycopg
        self.url = url
        self.password = password
        self.connect_timeout = connect_timeout
        self.operational_errors = (psycopg.OperationalError, psycopg.InterfaceError)
        self.programming_errors = (psycopg.errors.UndefinedTable,)

    def connect(self) -> _Connection:
        extra: dict[str, Any] = {"connect_timeout": max(1, round(self.connect_timeout))}
        if self.password is not None:
            extra["password"] = self.password
        connection: _Connection = self._psycopg.connect(
            self.url, autocommit=True, application_name="wallet-signer", **extra
        )
        return connection

    numeric_type = "NUMERIC(78,0)"

    def placeholders(self, statement: str) -> str:
        return statement.replace("?", "%s")

    def lock_key(self, connection: _Connection, key: str) -> None:
        connection.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))

    def execute_many(
        self, connection: _Connection, statement: str, params: Sequence[Sequence[Any]]
    ) -> None:
        with connection.cursor() as cursor:  # type: ignore[attr-defined]
            cursor.executemany(statement, params)

    def to_numeric(self, value: int) -> Any:
        from decimal import Decimal

        return Decimal(value)


    def make_batch(self, store: Store, tx: _Connection) -> "Batch":
        return _PostgresBatch(store, tx)

    def migration(self, version: int) -> tuple[str, ...]:
        return _PG_FUNCTIONS if version == 4 else ()

    def pipeline(self, connection: _Connection, enabled: bool) -> ContextManager[Any]:
        if not enabled:
            return nullcontext()
        return connection.pipeline()  # type: ignore[attr-defined, no-any-return]

    def begin(self, connection: _Connection, lock: bool, durable: bool = True) -> None:
        connection.execute("BEGIN")
        if not durable:  # visible at commit; on disk with the next synchronous commit
            connection.execute("SET LOCAL synchronous_commit = off")
        if lock:  # migrations and writer ordinals: one replica at a time
            connection.execute("SELECT pg_advisory_xact_lock(7361626)")


def open_store(
    url: str, *, password_file: Path | None = None, connect_timeout: float = 5.0
) -> Store:
    """A store for `url`: `sqlite:///ABSOLUTE/PATH`, `sqlite://RELATIVE/PATH` or
    `postgresql://USER@HOST[:PORT]/DB` (password from PGPASSFILE or `password_file`)."""
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        if not path:
            raise ConfigError("store.url: sqlite:// needs a path, e.g. sqlite:///var/lib/ws/state.db")
        return Store(url, _Sqlite(Path(path)), pool_size=4)
    if url.startswith(("postgresql://", "postgres://")):
        where = inline_password(url)
        if where is not None:
            raise ConfigError(
                f"store.url: no password in the URL ({where}): use password_file or PGPASSFILE"
            )
        password = None
        if password_file is not None:
            password = read_secret("store", "password", None, password_file)
        try:
            dialect = _Postgres(url, password, connect_timeout)
        except ImportError:
            raise ConfigError(
                "store.url is PostgreSQL but psycopg is not installed: "
                "pip install 'wallet-signer[postgres]'"
            ) from None
        return Store(redacted_url(url), dialect, pool_size=8)
    raise ConfigError("store.url: expected sqlite://PATH or postgresql://USER@HOST/DB")

