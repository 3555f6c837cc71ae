"""Every chain is witnessed, not only the newest (issue 16): with writers A and B (B started
later), deleting A's newest records or rewriting them with recomputed hashes used to pass
`audit verify`, since only a chain's start witnessed the others. Now every writer records the
other chains' heads while it runs and at stop, `verify` checks each chain's newest witness and
says per chain what is unwitnessed, and an optional HMAC key (`store.audit_key_file`) makes
rewriting need more than store access. Real stores (SQLite and PostgreSQL) and, for the attack
itself, two real `wallet-signer serve` processes."""

import json
import time
from pathlib import Path

import grpc
import pytest

from signer import cli
from signer.app.audit import GENESIS, AuditLog, record_hash, verify
from signer.app.records import ChainStart, canonical
from signer.config import StoreConfig
from signer.errors import ConfigError
from signer.store import AuditRow, Store, open_store
from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc
from tests.support.serve_process import replica_config, start_serve, stop_serve

KEY = b"k" * 32 + b"-test-audit-key-material"
MESSAGE = pb.SignMessageRequest(key_id="hot", message=b"witness")


def _execute(store: Store, sql: str, *params: object) -> None:
    with store._transaction() as tx:
        tx.execute(store._sql(sql), params)


def _signings(log: AuditLog, n: int, tag: str) -> None:
    for i in range(n):
        log.write([{"kind": "intent", "event": f"{tag}{i}", "request_id": f"r{tag}{i}"}])
        log.write([{"kind": "outcome", "event": f"{tag}{i}", "request_id": f"r{tag}{i}",
                    "status": "OK"}])


def _rewrite_from(store: Store, writer: str, seq: int, key: bytes | None = None,
                  status: str = "DENIED") -> None:
    """What an attacker with write access does: change the outcomes from `seq` on and
    recompute every hash after it, so the chain itself is consistent again."""
    rows = list(store.audit_rows(writer))
    prev = rows[seq - 2].hash if seq > 1 else GENESIS
    for row in rows[seq - 1:]:
        body = json.loads(row.body)
        if body.get("kind") == "outcome":
            body["status"] = status
        text = canonical(body)
        digest = (record_hash(writer, row.seq, prev, text) if key is None
                  else record_hash(writer, row.seq, prev, text, key))
        _execute(store, "UPDATE audit_log SET body = ?, prev_hash = ?, hash = ? "
                 "WHERE writer = ? AND seq = ?", text, prev, digest, writer, row.seq)
        prev = digest


def _rows(store: Store, writer: str) -> list[AuditRow]:
    return list(store.audit_rows(writer))


# -- two real writers on each store ------------------------------------------------------

def test_a_later_writer_witnesses_the_older_chains_newest_records(store: Store):
    a = AuditLog(store)
    _signings(a, 2, "a")
    b = AuditLog(store)
    b.start()  # its chain_start witnesses A at 5
    _signings(a, 2, "x")  # A: records 6-9, after B's start
    head = store.chain_head(a.writer)
    assert head == (9, _rows(store, a.writer)[-1].hash)
    report = verify(store)
    assert report.ok
    assert report.witnesses[a.writer].witnessed_seq == 5
    assert report.witnesses[a.writer].unwitnessed == 4  # said, not hidden
    assert report.witnesses[b.writer].witnessed_seq == 0  # nobody witnessed B yet

    assert b.witness() is True
    assert b.witness() is False  # nothing moved: no record
    report = verify(store)
    assert report.ok and report.witnesses[a.writer].unwitnessed == 0
    assert report.witnesses[a.writer].by == b.writer

    # deleting A's newest records is caught at the record B witnessed
    _execute(store, "DELETE FROM audit_log WHERE writer = ? AND seq > ?", a.writer, 7)
    report = verify(store)
    assert report.problem is not None
    assert report.problem.startswith(
        f"writer {a.writer} record 9: missing or changed, though writer {b.writer} witnessed it")


def test_rewriting_the_older_chains_outcomes_with_recomputed_hashes_is_caught(store: Store):
    a = AuditLog(store)
    _signings(a, 1, "a")
    b = AuditLog(store)
    b.start()
    _signings(a, 2, "x")
    b.witness()
    _rewrite_from(store, a.writer, 5)  # A's outcome at 5 "DENIED", hashes recomputed
    report = verify(store)
    assert report.problem is not None
    assert report.problem.startswith(f"writer {a.writer} record 7: missing or changed, though "
                                     f"writer {b.writer} witnessed it")


def test_what_no_witness_covers_is_reported_unwitnessed(store: Store):
    """The limit, stated: without the key, records after a chain's newest witness can be
    rewritten unnoticed; verify says how many and over how long."""
    a = AuditLog(store)
    _signings(a, 1, "a")
    b = AuditLog(store)
    b.start()
    b.witness()  # nothing new of A to witness beyond the start: no record
    _signings(a, 2, "x")
    _rewrite_from(store, a.writer, 5)
    report = verify(store)
    assert report.ok
    chain = report.witnesses[a.writer]
    assert (chain.witnessed_seq, chain.unwitnessed, chain.head_seq) == (3, 4, 7)
    assert chain.unwitnessed_seconds >= 0


def test_writers_witness_each_other_while_they_run_and_at_stop(store: Store):
    a = AuditLog(store)
    b = AuditLog(store)
    a.start()
    b.start()
    a.start_witnessing(0.05)
    try:
        _signings(b, 3, "b")
        deadline = time.monotonic() + 10
        while verify(store).witnesses[b.writer].unwitnessed:
            assert time.monotonic() < deadline, "A never witnessed B's records"
            time.sleep(0.05)
    finally:
        a.stop()
    _signings(a, 1, "a")
    b.stop()  # its last witness covers A's newest records
    report = verify(store)
    assert report.ok
    assert report.witnesses[a.writer].unwitnessed == 0
    # B's own stop witness is the log's last record: nothing can witness the last one
    assert report.witnesses[b.writer].unwitnessed == 1
    assert json.loads(_rows(store, b.writer)[-1].body)["kind"] == "witness"
    kinds = [json.loads(r.body)["kind"] for r in _rows(store, a.writer)]
    assert kinds.count("witness") >= 1


# -- the key -----------------------------------------------------------------------------

def test_with_the_key_rewriting_needs_the_key_even_where_no_witness_reaches(store: Store):
    a = AuditLog(store, key=KEY)
    _signings(a, 1, "a")
    b = AuditLog(store, key=KEY)
    b.start()
    _signings(a, 2, "x")  # 4 unwitnessed records at A's tail
    report = verify(store, key=KEY)
    assert report.ok and report.keyed and report.witnesses[a.writer].keyed is True
    assert report.witnesses[a.writer].unwitnessed == 4
    start = json.loads(_rows(store, a.writer)[0].body)
    assert start["mac"] == "hmac-sha256"

    _rewrite_from(store, a.writer, 5)  # plain SHA-256: the attacker has no key
    report = verify(store, key=KEY)
    assert report.problem == (f"writer {a.writer} record 5: not keyed, unlike the records "
                              "before it in its chain (rewritten without the audit key)")
    other = verify(store, key=b"another key of at least 32 bytes!!")
    assert other.problem == (f"writer {a.writer} record 1: contents do not match its hash "
                             "(edited, or written with another audit key)")


def test_a_keyed_log_needs_the_key_to_verify(store: Store):
    a = AuditLog(store, key=KEY)
    _signings(a, 1, "a")
    report = verify(store)
    assert report.problem == (f"writer {a.writer} record 1: the chain is keyed (hmac-sha256): "
                              "verify needs the audit key (store.audit_key_file)")


def test_with_the_key_no_unkeyed_record_may_follow_the_first_keyed_chain(store: Store):
    """An attacker without the key can still add a chain of their own with plain hashes (and
    a running keyed replica would witness it): with the key configured, verify refuses
    unkeyed records written after the first keyed chain began."""
    old = AuditLog(store)  # written before the key was configured
    _signings(old, 1, "o")
    keyed = AuditLog(store, key=KEY)
    keyed.start()  # when the key came into use: the unkeyed chain ended at 3
    assert verify(store, key=KEY).ok
    forged = AuditLog(store)  # no key: plain SHA-256, as anyone with store access can
    _signings(forged, 1, "f")
    keyed.witness()  # a running keyed writer witnesses what it finds
    report = verify(store, key=KEY)
    assert report.problem is not None and report.problem.startswith(
        f"writer {forged.writer} records 1-3: not keyed, but written after the audit key came "
        "into use (the first keyed chain began at ")


def test_with_the_key_an_unkeyed_writer_still_running_fails_verify(store: Store):
    old = AuditLog(store)
    _signings(old, 1, "o")
    AuditLog(store, key=KEY).start()
    _signings(old, 1, "late")  # an old replica still writing without the key
    report = verify(store, key=KEY)
    assert report.problem is not None
    assert report.problem.startswith(f"writer {old.writer} records 4-5: not keyed, but")


def _strip_key_mark_and_rewrite(store: Store, writer: str) -> None:
    rows = _rows(store, writer)
    body = json.loads(rows[0].body)
    del body["mac"]
    start = ChainStart(at=body["at"], role=body["role"], witness=body["witness"])
    assert canonical(start.fields()) == canonical(body)  # a well-formed unkeyed chain_start
    _execute(store, "UPDATE audit_log SET body = ? WHERE writer = ? AND seq = 1",
             canonical(body), writer)
    _rewrite_from(store, writer, 1)  # the whole chain, with plain hashes


def test_rewriting_a_keyed_chain_whole_as_unkeyed_is_caught(store: Store):
    a = AuditLog(store, key=KEY)
    b = AuditLog(store, key=KEY)
    b.start()
    _signings(a, 2, "a")  # A's chain_start witnessed B; nothing witnessed A
    _strip_key_mark_and_rewrite(store, a.writer)
    report = verify(store, key=KEY)
    assert report.problem is not None and report.problem.startswith(
        f"writer {a.writer} records 1-5: not keyed, but written after the audit key came into "
        "use")


def test_rewriting_the_only_keyed_chain_as_unkeyed_is_caught(store: Store):
    a = AuditLog(store, key=KEY)
    _signings(a, 1, "a")
    _strip_key_mark_and_rewrite(store, a.writer)
    report = verify(store, key=KEY)
    assert report.problem == ("no chain is keyed, though verify was given the audit key: no "
                              "writer has used the key yet, or every keyed chain was rewritten "
                              "without it")


def test_the_key_file_is_checked_and_never_shown(tmp_path: Path):
    short = tmp_path / "short"
    short.write_bytes(b"too short\n")
    with pytest.raises(ConfigError) as raised:
        StoreConfig(audit_key_file=short).audit_key()
    assert "fewer than 32 bytes" in str(raised.value) and "too short" not in str(raised.value)
    missing = StoreConfig(audit_key_file=tmp_path / "absent")
    with pytest.raises(ConfigError, match="cannot read"):
        missing.audit_key()
    good = tmp_path / "key"
    good.write_bytes(KEY + b"\n")
    assert StoreConfig(audit_key_file=good).audit_key() == KEY
    assert KEY.decode() not in repr(StoreConfig(audit_key_file=good))


def test_audit_verify_with_the_configured_key_reports_witnesses(tmp_path: Path, capsys):
    key_file = tmp_path / "audit.key"
    key_file.write_bytes(KEY)
    config = tmp_path / "signer.toml"
    config.write_text(f'[store]\nurl = "sqlite://{tmp_path / "state.db"}"\n'
                      f'audit_key_file = "{key_file}"\n'
                      '[keys.hot]\nbackend = "env"\nprivate_key_env = "HOT_WALLET_KEY"\n')
    store = open_store(f"sqlite://{tmp_path / 'state.db'}")
    try:
        store.migrate()
        a = AuditLog(store, key=KEY)
        _signings(a, 1, "a")
        AuditLog(store, key=KEY).start()
        _signings(a, 1, "b")
    finally:
        store.close()
    assert cli.main(["audit", "verify", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "audit log intact: 6 records in 2 chains" in out
    assert ("witnesses: 0 of 2 chains witnessed to their head by another chain; 2 end in "
            "unwitnessed records; 2 keyed (HMAC-SHA256)") in out
    assert f"writer {a.writer} (serve): head record 5 at " in out
    assert "; 2 records over " in out and "UNWITNESSED" in out
    assert KEY.decode() not in out
    config.write_text(f'[store]\nurl = "sqlite://{tmp_path / "state.db"}"\n')
    assert cli.main(["audit", "verify", "--config", str(config)]) == 1
    assert "verify needs the audit key (store.audit_key_file)" in capsys.readouterr().out


# -- the attack against two real serve processes -----------------------------------------




@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_two_serve_processes_the_older_chains_tail_cannot_be_deleted_or_rewritten(
    kind: str, tmp_path: Path, env_key: str, request: pytest.FixtureRequest, capsys
):
    url: str = request.getfixturevalue(f"{kind}_store_url")
    configs = [replica_config(tmp_path / name, url) for name in ("a", "b")]
    served_a = start_serve(configs[0].parent, configs[0], {"HOT_WALLET_KEY": env_key})
    try:
        stub_a = pb_grpc.SignerServiceStub(grpc.insecure_channel(served_a.target))
        stub_a.SignMessage(MESSAGE, timeout=10)
        served_b = start_serve(configs[1].parent, configs[1], {"HOT_WALLET_KEY": env_key})
        try:
            for _ in range(3):  # A's records after B's chain_start
                stub_a.SignMessage(MESSAGE, timeout=10)
        finally:
            stop_serve(served_b)  # B's last witness holds A's head
    finally:
        stop_serve(served_a)
    store = open_store(url)
    try:
        a, b = store.writers()
        assert verify(store).ok
        a_rows = _rows(store, a)
        b_rows = _rows(store, b)
        # B stopped first: its last witness holds A's head then (A's newest signature)
        witnessed = json.loads(b_rows[-1].body)["witness"][a][0]
        newest = [r for r in a_rows if json.loads(r.body)["kind"] == "outcome"][-1]

        def put_back() -> None:
            with store._transaction() as tx:
                tx.execute(store._sql("DELETE FROM audit_log WHERE writer = ?"), (a,))
                for row in a_rows:
                    tx.execute(store._sql("INSERT INTO audit_log (writer, seq, at, body, "
                                          "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)"), row)
            assert verify(store).ok

        # attack 1: delete A's newest signature (intent and outcome) and what follows
        _execute(store, "DELETE FROM audit_log WHERE writer = ? AND seq >= ?", a, newest.seq - 1)
        report = verify(store)
        assert report.problem is not None, "deleting the older writer's newest records passed"
        assert witnessed == newest.seq
        assert report.problem.startswith(
            f"writer {a} record {witnessed}: missing or changed, though writer {b} witnessed it")
        capsys.readouterr()
        assert cli.main(["audit", "verify", "--config", str(configs[1])]) == 1
        assert f"audit log TAMPERED: writer {a} record {witnessed}" in capsys.readouterr().out
        put_back()

        # attack 2: A's last outcome says DENIED, every hash after it recomputed
        _rewrite_from(store, a, newest.seq)
        report = verify(store)
        assert report.problem is not None, "rewriting the older writer's outcomes passed"
        assert report.problem.startswith(
            f"writer {a} record {witnessed}: missing or changed, though writer {b} witnessed it")
        put_back()

        # what verify says: A's stop witnessed B last, so only A's own last record (that
        # witness) is unwitnessed
        assert cli.main(["audit", "verify", "--config", str(configs[0])]) == 0
        out = capsys.readouterr().out
        assert "witnesses: 1 of 2 chains witnessed to their head by another chain" in out
        assert f"writer {a} (serve): head record {a_rows[-1].seq} at " in out
        assert "; 1 records over " in out
        assert json.loads(a_rows[-1].body)["kind"] == "witness"
    finally:
        store.close()


def test_keyed_chains_export_prune_and_verify_with_the_key(store: Store, tmp_path: Path):
    from signer.admin.archive import export, prune
    from signer.errors import InvalidRequest

    times = iter(f"2026-01-01T00:00:{n:02d}.000000+00:00" for n in range(60))
    a = AuditLog(store, key=KEY, clock=lambda: next(times))
    _signings(a, 3, "a")
    before = "2026-01-01T00:00:05.000000+00:00"
    records, _ = export(store, before, tmp_path / "a.jsonl")
    assert records > 0
    with pytest.raises(InvalidRequest, match="line 2: writer"):  # keyed rows need the key
        prune(store, before, tmp_path / "a.jsonl", "op")
    prune(store, before, tmp_path / "a.jsonl", "op", key=KEY)
    report = verify(store, key=KEY)
    assert report.ok, report.problem
    assert report.checkpoint is not None


def test_idle_writers_do_not_answer_each_others_witnesses(store: Store):
    a = AuditLog(store)
    b = AuditLog(store)
    a.start()
    b.start()
    _signings(a, 1, "a")
    assert b.witness() is True  # A moved
    assert a.witness() is True  # B's chain_start, then its witness: B moved
    for _ in range(3):  # from here on only witnesses were added: nothing more to say
        assert b.witness() is False
        assert a.witness() is False
    _signings(a, 1, "again")
    assert b.witness() is True
