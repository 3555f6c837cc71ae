"""The tamper-evident audit log: hash-chained records, one chain per writer, group commit.

Every process that writes (a serving replica, a `keys freeze` command) is a writer with its own
chain: record n carries the hash of record n-1, and the hash covers the writer, the sequence
number, the predecessor's hash and the record's canonical JSON. A chain starts with a
`chain_start` record that witnesses the heads of every other chain at that moment, so deleting
the tail of one replica's chain is caught by a later chain's witness. `verify` walks every chain.

Durability: `write` returns only when the records are committed, and flushed to disk unless
the caller passed `durable=False` (SQLite: WAL with synchronous=FULL, or NORMAL for a commit
that need not be flushed; PostgreSQL: synchronous_commit on, or off). The application writes a
signature's intent without the flush and its outcome with it: one flush per signature, and
the outcome's flush makes the intent durable too, since both logs are append-only and flushed
in order (docs/audit-durability.md). Concurrent writers share one commit: whoever finds no
flush in progress becomes the leader and commits everything queued, so audit does not
serialize signing, and under load one flush covers the records of many signatures.
"""

import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from signer import metrics
from signer.app.records import (
    AuditRecord,
    ChainStart,
    Checkpoint,
    Fields,
    canonical,
    parse,
    utc_now,
)
from signer.errors import StoreUnavailable
from signer.store import AuditRow, BudgetClaim, BudgetExceeded, BudgetUse, Store
from signer.store.sql import Batch

log = logging.getLogger(__name__)

GENESIS = "0" * 64
DEFAULT_COMMIT_TIMEOUT = 10.0

# a typed record (signer.app.records), or bare fields (stamped with `at` when written)
Record = AuditRecord | Mapping[str, Any]

__all__ = ["GENESIS", "AuditLog", "Record", "Reservation", "VerifyReport", "canonical",
           "record_hash", "utc_now", "verify"]


def record_hash(writer: str, seq: int, prev_hash: str, body: str) -> str:
    return hashlib.sha256(f"{writer}\n{seq}\n{prev_hash}\n{body}".encode()).hexdigest()


def _fields(record: Record, clock: Callable[[], str]) -> Fields:
    if isinstance(record, Mapping):
        return {"at": clock(), **record}
    return record.fields()


@dataclass(frozen=True)
class Reservation:
    """Budget claims to reserve in the same commit as the records they come with."""

    reservation: str
    claims: Sequence[BudgetClaim]
    now: float


@dataclass
class _Pending:
    bodies: list[Fields]
    reserve: Reservation | None = None
    settle: str | None = None
    release: str | None = None
    durable: bool = True
    also: Callable[[Batch, list[AuditRow]], None] | None = None
    done: bool = False
    leads: bool = False  # handed the lead by the previous leader
    error: BaseException | None = None
    uses: list[BudgetUse] = field(default_factory=list)
    wake: threading.Event = field(default_factory=threading.Event)


class AuditLog:
    """One writer's chain. `write` blocks until its records are committed (and, unless
    `durable=False`, flushed), or raises StoreUnavailable (the caller then signs nothing /
    releases nothing)."""

    def __init__(
        self, store: Store, *, clock: Callable[[], str] = utc_now, role: str = "serve"
    ) -> None:
        self.store = store
        self.writer = uuid.uuid4().hex
        self._clock = clock
        self._role = role
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._flushing = False
        self._head: tuple[int, str] | None = None  # our last committed (seq, hash)

    def start(self) -> None:
        """Begin this writer's chain now (else it begins with the first record)."""
        self.write([])

    def write(
        self,
        bodies: Iterable[Record],
        timeout: float | None = None,
        *,
        reserve: Reservation | None = None,
        settle: str | None = None,
        release: str | None = None,
        durable: bool = True,
        also: Callable[[Batch, list[AuditRow]], None] | None = None,
    ) -> list[BudgetUse]:
        """Commit `bodies`, with the budget operations that belong to them, in one
        transaction shared with whatever else is queued. The records are written even when
        a reservation does not fit (they say what was asked); the reservation then raises
        BudgetExceeded and reserves nothing.

        `durable=False` (the intent record) returns once the transaction is committed,
        visible to every replica, without waiting for it to reach the disk: the next
        durable commit on this store flushes it too (docs/audit-durability.md).

        `also(batch, rows)` runs in the same transaction, after these records (`rows`, with
        their sequence numbers) are inserted: an operator action that must commit with its
        record (`audit prune`)."""
        entry = _Pending([_fields(b, self._clock) for b in bodies], reserve, settle, release,
                         durable, also)
        with self._lock:
            self._queue.append(entry)
            leads = not self._flushing
            self._flushing = True
        if not leads:
            # wait for a leader to commit this entry, or to hand this thread the lead
            entry.wake.wait(DEFAULT_COMMIT_TIMEOUT if timeout is None else timeout)
            with self._lock:
                leads = entry.leads
                if not leads and not entry.done:
                    if entry in self._queue:  # not taken by a leader: it will never be written
                        self._queue.remove(entry)
                    raise StoreUnavailable("audit log: commit did not finish in time")
        if leads:
            self._lead()
        if isinstance(entry.error, BudgetExceeded):
            raise entry.error
        if entry.error is not None:
            raise StoreUnavailable(str(entry.error)) from None
        return entry.uses

    def _lead(self) -> None:
        """Commit everything queued (this thread's entry included), then hand the lead to
        the oldest entry queued meanwhile: one thread woken per commit, not every waiter."""
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            self._flush(batch)
        finally:
            with self._lock:
                for entry in batch:
                    entry.wake.set()
                if self._queue:
                    self._queue[0].leads = True
                    self._queue[0].wake.set()
                else:
                    self._flushing = False

    def _flush(self, batch: list[_Pending]) -> None:
        try:
            new_writer = None
            if self._head is None:
                self._head = self.store.chain_head(self.writer)
            if self._head is None:
                # the chain's first record sorts first: it is no younger than what follows
                first = min((b["at"] for e in batch for b in e.bodies), default=None)
                new_writer = (self.writer, first or self._clock())
                start = ChainStart(at=new_writer[1], role=self._role,
                                   witness=self.store.chain_heads())
                batch = [_Pending([start.fields()]), *batch]
            durable = any(entry.durable for entry in batch)
            seq, prev = self._head or (0, GENESIS)
            rows: list[AuditRow] = []
            hooks = []
            for entry in batch:
                first = len(rows)
                for body in entry.bodies:
                    seq += 1
                    text = canonical(body)
                    digest = record_hash(self.writer, seq, prev, text)
                    rows.append(AuditRow(self.writer, seq, str(body["at"]), text, prev, digest))
                    prev = digest
                if entry.also is not None:
                    hooks.append((entry.also, rows[first:]))
            with self.store.batch(lock=new_writer is not None, durable=durable) as commit:
                if new_writer is not None:
                    commit.register_writer(*new_writer)
                # releases first: what they give back is there for this batch's reservations
                commit.finish_many(
                    settle=[e.settle for e in batch if e.settle is not None],
                    release=[e.release for e in batch if e.release is not None],
                )
                reserved = [(e, e.reserve) for e in batch if e.reserve is not None]
                results = commit.reserve_many([
                    (r.reservation, r.claims, r.now) for _, r in reserved
                ])
                commit.append(rows)
                for hook, own in hooks:
                    hook(commit, own)
            for (entry, _), result in zip(reserved, results.get(), strict=True):
                if isinstance(result, BudgetExceeded):
                    entry.error = result  # this entry only: its reservation was not made
                else:
                    entry.uses = result
            self._head = (seq, prev)
            metrics.audit_committed(len(rows), durable)
        except StoreUnavailable as exc:
            self._head = None  # the commit may or may not have landed: re-read the head
            for entry in batch:
                entry.error = exc
        except Exception as exc:  # a bug: fail closed all the same
            log.exception("audit log: unexpected failure writing records")
            self._head = None
            for entry in batch:
                entry.error = StoreUnavailable("audit log: records could not be written")
            del exc
        finally:
            for entry in batch:
                entry.done = True

    def __repr__(self) -> str:
        return f"AuditLog(writer={self.writer}, {self.store!r})"


Heads = Mapping[str, tuple[int, str]]  # writer -> (seq, hash) of a record in its chain


@dataclass
class VerifyReport:
    records: int = 0
    chains: int = 0
    incomplete: list[str] = field(default_factory=list)  # request ids of intents with no outcome
    problem: str | None = None  # the first bad record, if any
    heads: dict[str, tuple[int, str]] = field(default_factory=dict)  # where each chain ends
    checkpoint: tuple[str, int] | None = None  # the prune checkpoint the walk started from

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(store: Store, resume: Heads | None = None) -> VerifyReport:
    """Walk every chain; stop at the first record that was edited, deleted or reordered.

    Streams: rows are read a batch at a time and only each chain's head and its open intents
    are kept, so memory does not grow with the log. A chain starts after the heads of the
    latest prune checkpoint (records an `audit prune` removed) and, when `resume` is given
    (a previous report's `heads`), after those: the row at a resumed head must still carry
    its hash, and only what follows is checked."""
    report = VerifyReport()
    starts: dict[str, tuple[int, str]] = {}
    pointer = store.latest_checkpoint()
    if pointer is not None:
        row = store.audit_row(*pointer)
        record = _parse(row.body) if row is not None else None
        if not isinstance(record, Checkpoint):
            report.problem = (f"writer {pointer[0]} record {pointer[1]}: the latest prune "
                              "checkpoint is missing or is not a checkpoint (edited)")
            return report
        report.checkpoint = pointer
        starts.update(record.heads)
    for writer, (seq, digest) in (resume or {}).items():
        if seq > starts.get(writer, (0, GENESIS))[0]:
            row = store.audit_row(writer, seq)
            if row is None or row.hash != digest:
                report.problem = (f"writer {writer} record {seq}: changed or deleted since "
                                  "the verification this one resumes from")
                return report
            starts[writer] = (seq, digest)
    witnessed: list[tuple[str, str, int, str]] = []  # (by writer, of writer, seq, hash)
    registered = store.writers()
    for writer in registered + sorted(set(store.audit_writers_in_log()) - set(registered)):
        report.chains += 1
        problem = (
            _verify_chain(store, writer, starts.get(writer), report, witnessed)
            if writer in registered
            else f"writer {writer}: records from a writer that never registered (inserted)"
        )
        if problem:
            report.problem = problem
            return report
    if pointer is not None and report.heads.get(pointer[0], (0, ""))[0] < pointer[1]:
        report.problem = f"writer {pointer[0]}: the checkpoint record is not in its chain"
        return report
    for by, of, seq, expected in witnessed:
        start_seq, start_hash = starts.get(of, (0, GENESIS))
        if seq < start_seq or (seq == start_seq and expected == start_hash):
            continue  # pruned (its export holds it) or verified before
        row = store.audit_row(of, seq)
        if row is None or row.hash != expected:
            report.problem = (
                f"writer {of} record {seq}: missing or changed, though writer {by} "
                "witnessed it when its chain started (records were deleted or edited)"
            )
            return report
    return report


def _loads(body: str) -> Any:
    """A stored record's fields (orjson; json for what it refuses, e.g. integers beyond 64
    bits), or None if the text is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            return json.loads(body)
        except ValueError:
            return None


def _parse(body: str) -> AuditRecord | None:
    raw = _loads(body)
    try:
        return parse(raw) if isinstance(raw, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


def _verify_chain(
    store: Store,
    writer: str,
    start: tuple[int, str] | None,
    report: VerifyReport,
    witnessed: list[tuple[str, str, int, str]],
) -> str | None:
    seq0, prev = start or (0, GENESIS)
    expected_seq = seq0 + 1
    open_intents: dict[str, str] = {}
    for row in store.audit_rows(writer, after=seq0):
        where = f"writer {writer} record {row.seq}"
        if row.seq != expected_seq:
            return f"writer {writer} record {expected_seq}: missing (deleted or reordered)"
        if row.prev_hash != prev:
            return f"{where}: does not follow record {row.seq - 1} (deleted or reordered)"
        if record_hash(writer, row.seq, row.prev_hash, row.body) != row.hash:
            return f"{where}: contents do not match its hash (edited)"
        body = _loads(row.body)
        if body is None:
            return f"{where}: not valid JSON (edited)"
        if not isinstance(body, dict) or body.get("at") != row.at:
            return f"{where}: time column does not match the record (edited)"
        kind = body.get("kind")
        if row.seq == 1 and kind != "chain_start":
            return f"{where}: a chain must begin with chain_start (records deleted)"
        if kind == "intent":
            open_intents[str(body.get("event"))] = str(body.get("request_id"))
        elif kind == "outcome":
            open_intents.pop(str(body.get("event")), None)
        elif kind in ("chain_start", "checkpoint"):
            record = _parse(row.body)
            if isinstance(record, ChainStart):
                for of, (seq, digest) in record.witness.items():
                    witnessed.append((writer, of, seq, digest))
            elif not isinstance(record, Checkpoint):
                return f"{where}: a malformed {kind} record"
        prev, expected_seq = row.hash, expected_seq + 1
        report.records += 1
    if expected_seq == 1:
        return f"writer {writer}: registered but has no records (its chain was deleted)"
    report.incomplete.extend(open_intents.values())
    report.heads[writer] = (expected_seq - 1, prev)
    return None
