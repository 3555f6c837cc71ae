"""The tamper-evident audit log: hash-chained records, one chain per writer, group commit.

Every process that writes (a serving replica, a `keys freeze` command) is a writer with its own
chain: record n carries the hash of record n-1, and the hash covers the writer, the sequence
number, the predecessor's hash and the record's canonical JSON. A chain starts with a
`chain_start` record that witnesses the heads of every other chain at that moment, so deleting
the tail of one replica's chain is caught by a later chain's witness. `verify` walks every chain.

Durability: `write` returns only when the records are committed (SQLite: WAL with
synchronous=FULL, fsync'd; PostgreSQL: a committed transaction). Concurrent writers share one
commit: whoever finds no flush in progress becomes the leader and commits everything queued, so
audit does not serialize signing.
"""

import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from signer.errors import StoreUnavailable
from signer.store import AuditRow, BudgetClaim, BudgetExceeded, BudgetUse, Store

log = logging.getLogger(__name__)

GENESIS = "0" * 64
DEFAULT_COMMIT_TIMEOUT = 10.0

Record = Mapping[str, Any]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def canonical(body: Record) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def record_hash(writer: str, seq: int, prev_hash: str, body: str) -> str:
    return hashlib.sha256(f"{writer}\n{seq}\n{prev_hash}\n{body}".encode()).hexdigest()


@dataclass(frozen=True)
class Reservation:
    """Budget claims to reserve in the same commit as the records they come with."""

    reservation: str
    claims: Sequence[BudgetClaim]
    now: float


@dataclass
class _Pending:
    bodies: list[dict[str, Any]]
    reserve: Reservation | None = None
    settle: str | None = None
    release: str | None = None
    done: bool = False
    leads: bool = False  # handed the lead by the previous leader
    error: BaseException | None = None
    uses: list[BudgetUse] = field(default_factory=list)
    wake: threading.Event = field(default_factory=threading.Event)


class AuditLog:
    """One writer's chain. `write` blocks until its records are durable, or raises
    StoreUnavailable (the caller then signs nothing / releases nothing)."""

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
        self._head: tuple[int, str] | None = None  # our last durable (seq, hash)

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
    ) -> list[BudgetUse]:
        """Commit `bodies`, with the budget operations that belong to them, in one
        transaction shared with whatever else is queued. A reservation that does not fit
        raises BudgetExceeded and nothing of this call is written."""
        stamped = [{"at": self._clock(), **body} for body in bodies]
        entry = _Pending(stamped, reserve, settle, release)
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
                first = next((b["at"] for e in batch for b in e.bodies), None)
                new_writer = (self.writer, first or self._clock())
                witness = {w: [s, h] for w, (s, h) in self.store.chain_heads().items()}
                start = {"at": new_writer[1], "kind": "chain_start", "role": self._role,
                         "witness": witness}
                batch = [_Pending([start]), *batch]
            seq, prev = self._head or (0, GENESIS)
            with self.store.batch(lock=new_writer is not None) as commit:
                if new_writer is not None:
                    commit.register_writer(*new_writer)
                for entry in batch:
                    if entry.reserve is not None:
                        try:
                            entry.uses = commit.reserve(
                                entry.reserve.reservation, entry.reserve.claims, entry.reserve.now
                            )
                        except BudgetExceeded as exc:
                            entry.error = exc  # this entry only: nothing of it is written
                            continue
                    if entry.settle is not None:
                        commit.settle(entry.settle)
                    if entry.release is not None:
                        commit.release(entry.release)
                    rows = []
                    for body in entry.bodies:
                        seq += 1
                        text = canonical(body)
                        digest = record_hash(self.writer, seq, prev, text)
                        rows.append(AuditRow(self.writer, seq, str(body["at"]), text, prev, digest))
                        prev = digest
                    commit.append(rows)
            self._head = (seq, prev)
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


@dataclass
class VerifyReport:
    records: int = 0
    chains: int = 0
    incomplete: list[str] = field(default_factory=list)  # request ids of intents with no outcome
    problem: str | None = None  # the first bad record, if any

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(store: Store) -> VerifyReport:
    """Walk every chain; stop at the first record that was edited, deleted or reordered."""
    report = VerifyReport()
    witnessed: list[tuple[str, str, int, str]] = []  # (by writer, of writer, seq, hash)
    registered = store.writers()
    for writer in registered + sorted(set(store.audit_writers_in_log()) - set(registered)):
        report.chains += 1
        problem = (
            _verify_chain(store, writer, report, witnessed)
            if writer in registered
            else f"writer {writer}: records from a writer that never registered (inserted)"
        )
        if problem:
            report.problem = problem
            return report
    for by, of, seq, expected in witnessed:
        row = store.audit_row(of, seq)
        if row is None or row.hash != expected:
            report.problem = (
                f"writer {of} record {seq}: missing or changed, though writer {by} "
                "witnessed it when its chain started (records were deleted or edited)"
            )
            return report
    return report


def _verify_chain(
    store: Store,
    writer: str,
    report: VerifyReport,
    witnessed: list[tuple[str, str, int, str]],
) -> str | None:
    prev, expected_seq = GENESIS, 1
    open_intents: dict[str, str] = {}
    for row in store.audit_rows(writer):
        where = f"writer {writer} record {row.seq}"
        if row.seq != expected_seq:
            return f"writer {writer} record {expected_seq}: missing (deleted or reordered)"
        if row.prev_hash != prev:
            return f"{where}: does not follow record {row.seq - 1} (deleted or reordered)"
        if record_hash(writer, row.seq, row.prev_hash, row.body) != row.hash:
            return f"{where}: contents do not match its hash (edited)"
        try:
            body = json.loads(row.body)
        except ValueError:
            return f"{where}: not valid JSON (edited)"
        if not isinstance(body, dict) or body.get("at") != row.at:
            return f"{where}: time column does not match the record (edited)"
        if row.seq == 1 and body.get("kind") != "chain_start":
            return f"{where}: a chain must begin with chain_start (records deleted)"
        if body.get("kind") == "chain_start":
            for of, (seq, digest) in dict(body.get("witness") or {}).items():
                witnessed.append((writer, str(of), int(seq), str(digest)))
        elif body.get("kind") == "intent":
            open_intents[str(body.get("event"))] = str(body.get("request_id"))
        elif body.get("kind") == "outcome":
            open_intents.pop(str(body.get("event")), None)
        prev, expected_seq = row.hash, expected_seq + 1
        report.records += 1
    if expected_seq == 1:
        return f"writer {writer}: registered but has no records (its chain was deleted)"
    report.incomplete.extend(open_intents.values())
    return None
