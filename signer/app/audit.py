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
import hmac
import json
import logging
import threading
import uuid
from _thread import allocate_lock as _allocate_lock
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson

from signer import metrics
from signer.app.records import (
    Admin,
    AuditRecord,
    ChainStart,
    Checkpoint,
    DryRun,
    Fields,
    Other,
    Signing,
    Witness,
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
MAC = "hmac-sha256"  # a keyed chain's chain_start says so

# a typed record (signer.app.records), or bare fields (stamped with `at` when written)
Record = AuditRecord | Mapping[str, Any]

__all__ = ["GENESIS", "AuditLog", "ChainWitness", "Record", "Reservation", "VerifyReport",
           "canonical", "hash_matches", "record_hash", "utc_now", "verify"]


def record_hash(writer: str, seq: int, prev_hash: str, body: str, key: bytes | None = None) -> str:
    """SHA-256 of the record and its place in the chain; HMAC-SHA256 of the same text with
    `key` (store.audit_key_file), so that rewriting a keyed chain needs the key."""
    text = f"{writer}\n{seq}\n{prev_hash}\n{body}".encode()
    if key is None:
        return hashlib.sha256(text).hexdigest()
    return hmac.new(key, text, hashlib.sha256).hexdigest()


def hash_matches(row: AuditRow, key: bytes | None) -> bool | None:
    """True if `row` carries its keyed hash, False if its plain one, None if neither."""
    if key is not None and hmac.compare_digest(
        record_hash(row.writer, row.seq, row.prev_hash, row.body, key), row.hash
    ):
        return True
    if record_hash(row.writer, row.seq, row.prev_hash, row.body) == row.hash:
        return False
    return None


_TYPED = (ChainStart, Witness, Signing, DryRun, Admin, Checkpoint, Other)  # concrete types:
# a tuple isinstance check, not an ABC's (Mapping) on every record


def _fields(record: Record, clock: Callable[[], str]) -> Fields:
    if isinstance(record, _TYPED):
        return record.fields()
    return {"at": clock(), **record}


@dataclass(frozen=True)
class Reservation:
    """Budget claims to reserve in the same commit as the records they come with."""

    reservation: str
    claims: Sequence[BudgetClaim]
    now: float


class _Pending:
    """One `write` waiting in the queue. A plain slotted class (two are made per signature):
    `wake` is a bare lock, held from creation, made only for a writer that waits; the leader
    releases it once, when the entry is committed or handed the lead."""

    __slots__ = ("also", "bodies", "done", "durable", "error", "leads", "release", "reserve",
                 "settle", "uses", "wake")

    def __init__(
        self,
        bodies: list[Fields],
        reserve: Reservation | None = None,
        settle: str | None = None,
        release: str | None = None,
        durable: bool = True,
        also: Callable[[Batch, list[AuditRow]], None] | None = None,
    ) -> None:
        self.bodies = bodies
        self.reserve = reserve
        self.settle = settle
        self.release = release
        self.durable = durable
        self.also = also
        self.done = False
        self.leads = False  # handed the lead by the previous leader
        self.error: BaseException | None = None
        self.uses: list[BudgetUse] = []
        self.wake: Any = None  # a held _thread lock while the writer waits on it


class AuditLog:
    """One writer's chain. `write` blocks until its records are committed (and, unless
    `durable=False`, flushed), or raises StoreUnavailable (the caller then signs nothing /
    releases nothing)."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], str] = utc_now,
        role: str = "serve",
        key: bytes | None = None,
    ) -> None:
        self.store = store
        self.writer = uuid.uuid4().hex
        self._clock = clock
        self._role = role
        self._key = key  # never logged, never in a repr
        self._witnessed: dict[str, tuple[int, str]] = {}  # the heads our last witness held
        self._witness_stop = threading.Event()
        self._witness_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._flushing = False
        self._head: tuple[int, str] | None = None  # our last committed (seq, hash)

    def start(self) -> None:
        """Begin this writer's chain now (else it begins with the first record)."""
        self.write([])

    def witness(self) -> bool:
        """Record the heads of the other chains that moved since this writer last recorded
        them (a `witness` record; nothing when none moved); True if a record was written.
        From then on, deleting or rewriting those chains up to those heads fails `verify`.
        Only what moved: a store with many finished chains (one per operator command) does
        not make every witness record list them all again."""
        moved = {w: h for w, h in self.store.chain_heads().items()
                 if w != self.writer and self._witnessed.get(w) != h
                 and not self._only_witnesses(w, h[0])}
        if not moved:
            return False
        self.write([Witness(at=self._clock(), witness=moved)])
        self._witnessed.update(moved)
        return True

    def _only_witnesses(self, writer: str, head: int) -> bool:
        """Whether everything `writer` added since we last witnessed it is its own witness
        records: then witnessing it again would only answer its witness with ours, and two
        idle replicas would write to each other forever."""
        last = self._witnessed.get(writer)
        if last is None:
            return False
        for row in self.store.audit_rows(writer, after=last[0], through=head):
            body = _loads(row.body)
            if not isinstance(body, dict) or body.get("kind") != "witness":
                return False
        return True

    def start_witnessing(self, every: float) -> None:
        """Witness the other chains every `every` seconds from a background thread, until
        `stop` (which witnesses once more). A failed witness is logged and retried."""
        if self._witness_thread is not None:
            return

        def run() -> None:
            while not self._witness_stop.wait(every):
                try:
                    self.witness()
                except StoreUnavailable as exc:
                    log.warning("audit log: could not record a witness of the other chains: %s",
                                exc)

        self._witness_thread = threading.Thread(target=run, name="audit-witness", daemon=True)
        self._witness_thread.start()

    def stop(self) -> None:
        """Stop witnessing and record the other chains' heads one last time."""
        self._witness_stop.set()
        if self._witness_thread is not None:
            self._witness_thread.join(DEFAULT_COMMIT_TIMEOUT)
        try:
            self.witness()
        except StoreUnavailable as exc:
            log.warning("audit log: could not record a witness at stop: %s", exc)

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
            if leads:
                self._flushing = True
            else:
                entry.wake = _allocate_lock()
                entry.wake.acquire()
        if not leads:
            # wait for a leader to commit this entry, or to hand this thread the lead; woken,
            # one of the two is set already (the leader sets it before it releases `wake`),
            # so a woken writer does not contend for `_lock` with the leader still waking others
            wait = DEFAULT_COMMIT_TIMEOUT if timeout is None else max(0.0, timeout)
            if entry.wake.acquire(True, wait):
                leads = entry.leads
            else:
                with self._lock:
                    leads = entry.leads
                    if not leads and not entry.done:
                        if entry in self._queue:  # not taken by a leader: never written
                            self._queue.remove(entry)
                        raise StoreUnavailable("audit log: commit did not finish in time")
        if leads:
            self._lead(entry)
        if entry.error is not None:
            if isinstance(entry.error, BudgetExceeded):
                raise entry.error
            raise StoreUnavailable(str(entry.error)) from None
        return entry.uses

    def _lead(self, own: _Pending) -> None:
        """Commit everything queued (this thread's entry `own` included), then hand the lead
        to the oldest entry queued meanwhile: one thread woken per commit, not every waiter."""
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            self._flush(batch)  # marks every entry done
        finally:
            with self._lock:
                following = self._queue[0] if self._queue else None
                if following is not None:
                    following.leads = True
                else:
                    self._flushing = False
            # woken outside `_lock`; each waiter's lock is released exactly once
            for entry in batch:
                if entry is not own and entry.wake is not None:
                    entry.wake.release()
            if following is not None:
                following.wake.release()

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
                                   witness=self.store.chain_heads(),
                                   mac=MAC if self._key is not None else None)
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
                    digest = record_hash(self.writer, seq, prev, text, self._key)
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


@dataclass(frozen=True)
class ChainWitness:
    """How far the other chains vouch for one chain: its records up to `witnessed_seq` were
    recorded by another writer (`by`, in a record made at `witness_at`), so deleting or
    rewriting them fails `verify`; the records after it are unwitnessed."""

    head_seq: int
    head_at: str
    first_at: str  # the first record checked in this chain
    role: str | None  # from its chain_start (None when that was pruned or resumed past)
    keyed: bool | None  # HMAC (True), plain SHA-256 (False); None: verified without the key
    witnessed_seq: int = 0  # 0: no other chain witnessed it (in the records checked)
    witnessed_at: str | None = None  # the time of the witnessed record
    by: str | None = None
    witness_at: str | None = None

    @property
    def unwitnessed(self) -> int:
        return max(0, self.head_seq - self.witnessed_seq)

    @property
    def unwitnessed_seconds(self) -> float:
        """From the newest witnessed record (or the first checked) to the head."""
        if self.unwitnessed == 0:
            return 0.0
        since = self.witnessed_at or self.first_at
        try:
            return max(0.0, (datetime.fromisoformat(self.head_at)
                             - datetime.fromisoformat(since)).total_seconds())
        except ValueError:
            return 0.0


@dataclass
class VerifyReport:
    records: int = 0
    chains: int = 0
    incomplete: list[str] = field(default_factory=list)  # request ids of intents with no outcome
    problem: str | None = None  # the first bad record, if any
    heads: dict[str, tuple[int, str]] = field(default_factory=dict)  # where each chain ends
    checkpoint: tuple[str, int] | None = None  # the prune checkpoint the walk started from
    witnesses: dict[str, ChainWitness] = field(default_factory=dict)  # per chain
    keyed: bool = False  # verified with the audit key

    @property
    def ok(self) -> bool:
        return self.problem is None


# of writer -> (seq, {hash: (by writer, time of the witness record)}): the newest witness of
# each chain (and every hash claimed for that seq). Only the newest matters: a chain's
# records are linked, so any change at or before it changes the hash it witnessed.
_Newest = dict[str, tuple[int, dict[str, tuple[str, str]]]]


def _saw(newest: _Newest, of: str, seq: int, digest: str, by: str, at: str) -> None:
    current = newest.get(of)
    if current is None or seq > current[0]:
        newest[of] = (seq, {digest: (by, at)})
    elif seq == current[0]:
        current[1].setdefault(digest, (by, at))


@dataclass
class _Walk:
    """What walking the chains keeps: chains² at most, never records."""

    key: bytes | None
    newest: _Newest = field(default_factory=dict)
    # the earliest keyed chain_start (its time, the heads it witnessed): when the key came
    # into use. Unkeyed records after those heads were written without the key.
    keyed_since: tuple[str, Mapping[str, tuple[int, str]]] | None = None
    chains: dict[str, ChainWitness] = field(default_factory=dict)


def verify(store: Store, resume: Heads | None = None, key: bytes | None = None) -> VerifyReport:
    """Walk every chain; stop at the first record that was edited, deleted or reordered.

    Streams: rows are read a batch at a time and only each chain's head, its open intents
    and the newest witness of each chain are kept, so memory does not grow with the log. A
    chain starts after the heads of the latest prune checkpoint (records an `audit prune`
    removed) and, when `resume` is given (a previous report's `heads`), after those: the row
    at a resumed head must still carry its hash, and only what follows is checked.

    Every chain's newest witness (a `chain_start` or `witness` record of another chain) must
    still match the witnessed record. With `key` (store.audit_key_file), keyed chains are
    checked with HMAC-SHA256, and a chain that is not keyed must end where the earliest keyed
    chain_start saw it (when the key came into use): anything unkeyed written after that could
    have been written by anyone with store access. `report.witnesses` says, per chain, how
    far it is witnessed."""
    report = VerifyReport(keyed=key is not None)
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
    walk = _Walk(key)
    registered = store.writers()
    for writer in registered + sorted(set(store.audit_writers_in_log()) - set(registered)):
        report.chains += 1
        problem = (
            _verify_chain(store, writer, starts.get(writer), report, walk)
            if writer in registered
            else f"writer {writer}: records from a writer that never registered (inserted)"
        )
        if problem:
            report.problem = problem
            return report
    if pointer is not None and report.heads.get(pointer[0], (0, ""))[0] < pointer[1]:
        report.problem = f"writer {pointer[0]}: the checkpoint record is not in its chain"
        return report
    for of, (seq, claims) in sorted(walk.newest.items()):
        start_seq, start_hash = starts.get(of, (0, GENESIS))
        if seq < start_seq:
            continue  # pruned (its export holds it) or verified before
        row = store.audit_row(of, seq)
        for expected, (by, at) in sorted(claims.items()):
            if seq == start_seq and expected == start_hash:
                continue
            if row is None or row.hash != expected:
                report.problem = (
                    f"writer {of} record {seq}: missing or changed, though writer {by} "
                    f"witnessed it at {at} (records were deleted or edited)"
                )
                return report
    if key is not None and walk.chains and not any(c.keyed for c in walk.chains.values()):
        report.problem = ("no chain is keyed, though verify was given the audit key: no writer "
                          "has used the key yet, or every keyed chain was rewritten without it")
        return report
    for writer, chain in walk.chains.items():
        seen = walk.newest.get(writer)
        if seen is not None:
            seq, claims = seen
            by, at = sorted(claims.values())[0]
            row = store.audit_row(writer, seq)
            chain = replace(chain, witnessed_seq=seq, by=by, witness_at=at,
                            witnessed_at=row.at if row is not None else None)
        report.witnesses[writer] = chain
        if walk.keyed_since is not None and chain.keyed is False:
            since, heads = walk.keyed_since
            covered = heads.get(writer, (0, ""))[0]
            if covered < chain.head_seq:
                report.problem = (
                    f"writer {writer} records {covered + 1}-{chain.head_seq}: not keyed, but "
                    f"written after the audit key came into use (the first keyed chain began "
                    f"at {since}): by a writer not configured with the key, or by someone "
                    "with store access"
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


def _keyed_start(body: str) -> bool:
    record = _parse(body)
    return isinstance(record, ChainStart) and record.mac is not None


def _verify_chain(
    store: Store,
    writer: str,
    start: tuple[int, str] | None,
    report: VerifyReport,
    walk: _Walk,
) -> str | None:
    seq0, prev = start or (0, GENESIS)
    expected_seq = seq0 + 1
    open_intents: dict[str, str] = {}
    keyed: bool | None = None  # decided by the first record checked (with the key)
    role: str | None = None
    first_at = head_at = ""
    hint = " (edited, or written with another audit key)" if walk.key is not None else " (edited)"
    for row in store.audit_rows(writer, after=seq0):
        where = f"writer {writer} record {row.seq}"
        if row.seq != expected_seq:
            return f"writer {writer} record {expected_seq}: missing (deleted or reordered)"
        if row.prev_hash != prev:
            return f"{where}: does not follow record {row.seq - 1} (deleted or reordered)"
        matched = hash_matches(row, walk.key)
        if matched is None:
            if walk.key is None and _keyed_start(row.body):
                return (f"{where}: the chain is keyed ({MAC}): verify needs the audit key "
                        "(store.audit_key_file)")
            return f"{where}: contents do not match its hash{hint}"
        if walk.key is not None:
            if keyed is None:
                keyed = matched
            elif matched != keyed:
                return (f"{where}: {'keyed' if matched else 'not keyed'}, unlike the records "
                        "before it in its chain (rewritten without the audit key)")
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
        elif kind in ("chain_start", "witness", "checkpoint"):
            record = _parse(row.body)
            if isinstance(record, ChainStart | Witness):
                if isinstance(record, ChainStart):
                    role = record.role
                    if record.mac is not None:
                        if walk.key is None:
                            return (f"{where}: the chain is keyed ({record.mac}): verify "
                                    "needs the audit key (store.audit_key_file)")
                        if keyed is not True:
                            return f"{where}: says the chain is keyed, but it is not (rewritten)"
                        if walk.keyed_since is None or record.at < walk.keyed_since[0]:
                            walk.keyed_since = (record.at, record.witness)
                for of, (seq, digest) in record.witness.items():
                    if of == writer:
                        continue
                    _saw(walk.newest, of, seq, digest, writer, row.at)
            elif not isinstance(record, Checkpoint):
                return f"{where}: a malformed {kind} record"
        first_at = first_at or row.at
        head_at = row.at
        prev, expected_seq = row.hash, expected_seq + 1
        report.records += 1
    if expected_seq == 1:
        return f"writer {writer}: registered but has no records (its chain was deleted)"
    report.incomplete.extend(open_intents.values())
    report.heads[writer] = (expected_seq - 1, prev)
    if expected_seq - 1 > seq0:
        walk.chains[writer] = ChainWitness(head_seq=expected_seq - 1, head_at=head_at,
                                           first_at=first_at, role=role, keyed=keyed)
    return None
