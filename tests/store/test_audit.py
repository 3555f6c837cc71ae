"""The audit log on every store: chains verify, group commit batches, and every kind of
tampering (edit, delete, reorder, truncate, insert) is caught at the record it touched."""

import itertools
import json
import threading

import pytest

from signer.app.audit import AuditLog, verify
from signer.errors import StoreUnavailable
from signer.store import Store


def _run(store: Store, records: int = 5) -> AuditLog:
    log = AuditLog(store)
    for i in range(records):
        log.write([{"kind": "intent", "event": f"e{i}", "request_id": f"r{i}"}])
        log.write([{"kind": "outcome", "event": f"e{i}", "request_id": f"r{i}", "status": "OK"}])
    return log


def _execute(store: Store, sql: str, *params: object) -> None:
    with store._transaction() as tx:
        tx.execute(store._sql(sql), params)


def test_concurrent_writers_share_commits_and_the_chain_verifies(store: Store):
    log = AuditLog(store)
    log.start()
    commits = 0
    batch = store.batch

    def counting_batch(lock=False, durable=True):  # instrumentation only: the real commit runs
        nonlocal commits
        commits += 1
        return batch(lock, durable)

    store.batch = counting_batch  # type: ignore[method-assign]

    def caller(n: int) -> None:
        for i in range(20):
            log.write([{"kind": "intent", "event": f"{n}-{i}", "request_id": f"{n}-{i}"}])
            log.write([{"kind": "outcome", "event": f"{n}-{i}", "request_id": f"{n}-{i}"}])

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    report = verify(store)
    assert report.ok, report.problem
    assert report.records == 1 + 16 * 20 * 2  # chain_start + every record
    assert report.incomplete == []
    assert commits < 16 * 20 * 2  # concurrent writes shared commits


def test_each_writer_has_its_own_chain_and_later_chains_witness_earlier_ones(store: Store):
    first = _run(store, 3)
    second = _run(store, 2)
    report = verify(store)
    assert report.ok and report.chains == 2 and report.records == 1 + 6 + 1 + 4
    start = json.loads(store.audit_row(second.writer, 1).body)
    assert start["kind"] == "chain_start"
    assert start["witness"] == {first.writer: [7, store.audit_row(first.writer, 7).hash]}


def test_an_intent_without_outcome_is_incomplete_not_tampering(store: Store):
    log = _run(store, 2)
    log.write([{"kind": "intent", "event": "killed", "request_id": "req-killed"}])
    report = verify(store)
    assert report.ok
    assert report.incomplete == ["req-killed"]


def test_editing_a_record_is_caught_at_that_record(store: Store):
    log = _run(store)
    row = store.audit_row(log.writer, 4)
    edited = row.body.replace('"status":"OK"', '"status":"PERMISSION_DENIED"')
    if edited == row.body:
        edited = row.body.replace('"kind":"intent"', '"kind":"outcome"')
    _execute(store, "UPDATE audit_log SET body = ? WHERE writer = ? AND seq = ?", edited, log.writer, 4)
    report = verify(store)
    assert not report.ok
    assert report.problem == f"writer {log.writer} record 4: contents do not match its hash (edited)"


def test_editing_a_record_and_its_hash_is_caught_at_the_next_record(store: Store):
    from signer.app.audit import record_hash

    log = _run(store)
    row = store.audit_row(log.writer, 4)
    body = row.body.replace('"request_id":"r1"', '"request_id":"forged"')
    assert body != row.body
    forged = record_hash(log.writer, 4, row.prev_hash, body)
    _execute(
        store, "UPDATE audit_log SET body = ?, hash = ? WHERE writer = ? AND seq = ?",
        body, forged, log.writer, 4,
    )
    report = verify(store)
    assert report.problem == f"writer {log.writer} record 5: does not follow record 4 (deleted or reordered)"


def test_deleting_a_record_is_caught(store: Store):
    log = _run(store)
    _execute(store, "DELETE FROM audit_log WHERE writer = ? AND seq = ?", log.writer, 6)
    report = verify(store)
    assert report.problem == f"writer {log.writer} record 6: missing (deleted or reordered)"


def test_reordering_two_records_is_caught(store: Store):
    log = _run(store)
    a, b = store.audit_row(log.writer, 5), store.audit_row(log.writer, 6)
    # swap everything but the position: the rows now sit in each other's place
    for row, other in ((a, b), (b, a)):
        _execute(
            store,
            "UPDATE audit_log SET at = ?, body = ?, prev_hash = ?, hash = ? "
            "WHERE writer = ? AND seq = ?",
            other.at, other.body, other.prev_hash, other.hash, log.writer, row.seq,
        )
    report = verify(store)
    assert report.problem == f"writer {log.writer} record 5: does not follow record 4 (deleted or reordered)"


def test_truncating_a_chain_is_caught_by_a_later_chains_witness(store: Store):
    first = _run(store, 3)
    _run(store, 1)
    _execute(store, "DELETE FROM audit_log WHERE writer = ? AND seq > ?", first.writer, 5)
    report = verify(store)
    assert report.problem is not None
    assert report.problem.startswith(f"writer {first.writer} record 7: missing or changed")


def test_deleting_a_whole_chain_is_caught(store: Store):
    first = _run(store, 2)
    _execute(store, "DELETE FROM audit_log WHERE writer = ?", first.writer)
    report = verify(store)
    assert report.problem == f"writer {first.writer}: registered but has no records (its chain was deleted)"


def test_records_from_an_unregistered_writer_are_caught(store: Store):
    log = _run(store, 1)
    row = store.audit_row(log.writer, 2)
    _execute(
        store, "INSERT INTO audit_log (writer, seq, at, body, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)",
        "f" * 32, 1, row.at, row.body, row.prev_hash, row.hash,
    )
    report = verify(store)
    assert report.problem == f"writer {'f' * 32}: records from a writer that never registered (inserted)"


def test_a_failed_commit_raises_and_the_chain_continues_after_it(store: Store, monkeypatch):
    log = _run(store, 1)

    def broken(lock=False, durable=True):  # a store fault, injected once
        raise StoreUnavailable("state store (test) unavailable: nothing was signed")

    monkeypatch.setattr(store, "batch", broken)
    with pytest.raises(StoreUnavailable):
        log.write([{"kind": "intent", "event": "x", "request_id": "x"}])
    monkeypatch.undo()
    log.write([{"kind": "outcome", "event": "x", "request_id": "x"}])
    report = verify(store)
    assert report.ok and report.records == 4


def test_tail_returns_the_newest_records_in_order(store: Store):
    log = _run(store, 5)
    rows = store.recent_audit(3)
    assert [(r.writer, r.seq) for r in rows] == [(log.writer, 9), (log.writer, 10), (log.writer, 11)]


def test_a_batch_larger_than_one_insert_statement_is_written_whole(store: Store):
    """SQLite inserts a group commit's rows with one multi-row INSERT per 166 rows (999
    variables): 400 records cross two chunk boundaries and must land in order, linked."""
    log = AuditLog(store)
    log.write([{"kind": "admin", "action": f"a{i}", "n": i} for i in range(400)])
    report = verify(store)
    assert report.ok, report.problem
    assert report.records == 401  # chain_start + 400
    rows = list(store.audit_rows(log.writer))
    assert [r.seq for r in rows] == list(range(1, 402))
    assert [json.loads(r.body)["n"] for r in rows[1:]] == list(range(400))
    assert all(r.prev_hash == p.hash for p, r in itertools.pairwise(rows))


def test_a_writer_whose_commit_does_not_finish_in_time_fails_closed(store: Store, monkeypatch):
    """A caller queued behind a stuck commit gives up after its timeout with StoreUnavailable,
    its record is never written, and the log carries on once the commit finishes."""
    log = _run(store, 1)
    entered, release = threading.Event(), threading.Event()
    batch = store.batch

    def stuck(lock=False, durable=True):  # the leader's commit hangs until released
        entered.set()
        assert release.wait(10)
        return batch(lock, durable)

    monkeypatch.setattr(store, "batch", stuck)
    leader = threading.Thread(target=log.write, args=([{"kind": "admin", "action": "slow"}],))
    leader.start()
    assert entered.wait(10)
    with pytest.raises(StoreUnavailable, match="did not finish in time"):
        log.write([{"kind": "admin", "action": "late"}], timeout=0.2)
    release.set()
    leader.join(10)
    monkeypatch.undo()
    log.write([{"kind": "admin", "action": "after"}])
    report = verify(store)
    assert report.ok, report.problem
    actions = [json.loads(r.body).get("action") for r in store.audit_rows(log.writer)]
    assert actions[-2:] == ["slow", "after"] and "late" not in actions
