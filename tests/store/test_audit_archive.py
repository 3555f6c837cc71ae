"""`audit export` / `audit prune` / `audit verify --resume` on every store: prune deletes only
what an export of the same range holds, leaves a checkpoint from which verify proves the rest,
drops budget rows no window counts, and every wrong file, date or store state is refused with
nothing deleted."""

import json
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest

from signer import cli
from signer.admin.archive import export, parse_before, prune
from signer.app.audit import AuditLog, verify
from signer.errors import FailedPrecondition, InvalidRequest
from signer.store import BudgetClaim, Store

CUT = "2026-01-10T00:00:00.000000+00:00"


def clock(day: int) -> Iterator[str]:
    for n in count():
        yield f"2026-01-{day:02d}T00:00:{n // 1000000:02d}.{n % 1000000:06d}+00:00"


def run(store: Store, day: int, records: int) -> AuditLog:
    """A writer whose records are all stamped on `day` of January 2026."""
    times = clock(day)
    log = AuditLog(store, clock=lambda: next(times))
    for i in range(records):
        log.write([{"kind": "intent", "event": f"{day}-{i}", "request_id": f"r{day}-{i}"}])
        log.write([{"kind": "outcome", "event": f"{day}-{i}", "request_id": f"r{day}-{i}"}])
    return log


def rows(store: Store) -> int:
    return sum(1 for w in store.writers() for _ in store.audit_rows(w))


def test_export_then_prune_keeps_the_log_provable(store: Store, tmp_path: Path):
    old = run(store, 1, 5)  # 11 records, all before the cut
    mixed = run(store, 9, 3)  # 7 before ...
    mixed_times = clock(11)
    mixed._clock = lambda: next(mixed_times)
    mixed.write([{"kind": "admin", "action": "x"}])  # ... and 1 after
    assert verify(store).ok

    records, heads = export(store, CUT, tmp_path / "a.jsonl")
    # every chain keeps at least its last record; the rest of each prefix before the cut goes
    assert heads == {old.writer: (10, store.audit_row(old.writer, 10).hash),
                     mixed.writer: (7, store.audit_row(mixed.writer, 7).hash)}
    assert records == 10 + 7
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["before"] == CUT and len(lines) == 1 + records + 1

    checkpoint = prune(store, CUT, tmp_path / "a.jsonl", "op")
    assert checkpoint.records == records
    after = verify(store)
    assert after.ok, after.problem
    assert after.checkpoint is not None
    # what is left: each chain's last record, the pruning command's chain_start + checkpoint
    assert rows(store) == 1 + 1 + 2 == after.records

    # the log goes on: the serving writer appends, a new chain witnesses pruned chains
    mixed.write([{"kind": "admin", "action": "y"}])
    run(store, 12, 1)
    assert verify(store).ok

    # a second range, exported and pruned after the first: the checkpoint carries both
    second = parse_before("2026-01-12")
    records, _ = export(store, second, tmp_path / "b.jsonl")
    assert records == 1  # mixed's record 8 (its 9 is its last; the rest is newer or pruned)
    prune(store, second, tmp_path / "b.jsonl", "op")
    report = verify(store)
    assert report.ok, report.problem


def test_prune_refuses_what_the_export_does_not_hold(store: Store, tmp_path: Path):
    run(store, 1, 3)
    export(store, CUT, tmp_path / "a.jsonl")
    before = rows(store)
    text = (tmp_path / "a.jsonl").read_text()

    with pytest.raises(InvalidRequest, match=r"holds the records before .* not before"):
        prune(store, parse_before("2026-01-05"), tmp_path / "a.jsonl", "op")

    (tmp_path / "edited.jsonl").write_text(text.replace('r1-1', 'r1-9'))
    with pytest.raises(InvalidRequest, match=r"line 5: writer .* record 4 .* does not match"):
        prune(store, CUT, tmp_path / "edited.jsonl", "op")

    (tmp_path / "short.jsonl").write_text("\n".join(text.splitlines()[:-1]) + "\n")
    with pytest.raises(InvalidRequest, match="no heads line"):
        prune(store, CUT, tmp_path / "short.jsonl", "op")

    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(InvalidRequest, match="is empty"):
        prune(store, CUT, tmp_path / "empty.jsonl", "op")
    (tmp_path / "other.jsonl").write_text('{"a": 1}\n')
    with pytest.raises(InvalidRequest, match="not a wallet-signer audit export"):
        prune(store, CUT, tmp_path / "other.jsonl", "op")
    (tmp_path / "garbage.jsonl").write_text(text.splitlines()[0] + "\nnot json\n")
    with pytest.raises(InvalidRequest, match="line 2: not JSON"):
        prune(store, CUT, tmp_path / "garbage.jsonl", "op")
    with pytest.raises(InvalidRequest, match="cannot read"):
        prune(store, CUT, tmp_path / "missing.jsonl", "op")

    # the store changed after the export (a record edited): nothing is deleted
    with store._transaction() as tx:
        tx.execute(store._sql("UPDATE audit_log SET hash = ? WHERE seq = 3"), ("f" * 64,))
    with pytest.raises(FailedPrecondition, match="not the ones in"):
        prune(store, CUT, tmp_path / "a.jsonl", "op")
    assert rows(store) == before


def test_an_export_made_before_another_prune_is_refused(store: Store, tmp_path: Path):
    run(store, 1, 3)
    run(store, 2, 3)
    export(store, CUT, tmp_path / "a.jsonl")
    export(store, CUT, tmp_path / "again.jsonl")
    prune(store, CUT, tmp_path / "a.jsonl", "op")
    with pytest.raises(FailedPrecondition, match="pruned since: export again"):
        prune(store, CUT, tmp_path / "again.jsonl", "op")


def test_export_never_overwrites_and_dates_are_checked(store: Store, tmp_path: Path):
    run(store, 1, 1)
    (tmp_path / "exists.jsonl").write_text("keep")
    with pytest.raises(InvalidRequest, match="exists; an export never overwrites"):
        export(store, CUT, tmp_path / "exists.jsonl")
    assert (tmp_path / "exists.jsonl").read_text() == "keep"
    with pytest.raises(InvalidRequest, match="cannot create"):
        export(store, CUT, tmp_path / "no-such-dir" / "a.jsonl")
    with pytest.raises(InvalidRequest, match="--before: 'yesterday' is not an ISO 8601"):
        parse_before("yesterday")
    assert parse_before("2026-01-10") == CUT
    assert parse_before("2026-01-10T02:00:00+02:00") == CUT


def test_verify_catches_a_removed_checkpoint_and_resumes(store: Store, tmp_path: Path):
    first = run(store, 1, 3)
    export(store, CUT, tmp_path / "a.jsonl")
    prune(store, CUT, tmp_path / "a.jsonl", "op")
    report = verify(store)
    assert report.ok

    # resume: only what was added since is checked, from the saved heads
    first.write([{"kind": "admin", "action": "later"}])
    resumed = verify(store, report.heads)
    assert resumed.ok and resumed.records == 1
    # the row a resumed head names must still carry its hash
    writer, (seq, _) = next(iter(report.heads.items()))
    with store._transaction() as tx:
        tx.execute(store._sql("UPDATE audit_log SET hash = ? WHERE writer = ? AND seq = ?"),
                   ("0" * 64, writer, seq))
    problem = verify(store, report.heads).problem
    assert problem and "changed or deleted since the verification" in problem

    with store._transaction() as tx:
        tx.execute("DELETE FROM audit_checkpoints")
    problem = verify(store).problem
    assert problem and "missing" in problem


def test_prune_drops_budget_rows_no_window_counts(store: Store, tmp_path: Path):
    now = time.time()
    day = 86400
    store.reserve("old", [BudgetClaim("t/eth", 5, 100, day)], now - 40 * day)
    store.settle("old")
    store.reserve("recent", [BudgetClaim("t/eth", 7, 100, day)], now - 60)
    assert store.budget_spent("t/eth", day, now) == 7  # "old" left the window: not counted
    run(store, 1, 1)
    cut = parse_before("2099-01-01")
    export(store, cut, tmp_path / "a.jsonl")
    prune(store, cut, tmp_path / "a.jsonl", "op")
    with store._transaction() as tx:
        left = tx.execute("SELECT reservation FROM budget_spend").fetchall()
    assert [r[0] for r in left] == ["recent"]
    assert store.budget_spent("t/eth", day, now) == 7


def test_the_commands(tmp_path: Path, capsys):
    db = tmp_path / "state.db"
    config = tmp_path / "signer.toml"
    config.write_text(f'[store]\nurl = "sqlite://{db}"\n')
    from signer.store import open_store

    store = open_store(f"sqlite://{db}")
    store.migrate()
    run(store, 1, 2)
    store.close()
    base = ["audit"]
    c = ["--config", str(config)]
    assert cli.main([*base, "export", *c, "--before", "2026-01-10", "--to",
                     str(tmp_path / "e.jsonl")]) == 0
    assert "exported 4 records of 1 chains" in capsys.readouterr().out
    assert cli.main([*base, "prune", *c, "--before", "2026-01-10", "--export",
                     str(tmp_path / "e.jsonl")]) == 0
    assert "pruned 4 records" in capsys.readouterr().out
    state = tmp_path / "verified.json"
    assert cli.main([*base, "verify", *c, "--resume", str(state)]) == 0
    out = capsys.readouterr().out
    assert "audit log intact: 3 records" in out and "prune checkpoint" in out
    assert cli.main([*base, "verify", *c, "--resume", str(state)]) == 0
    assert "intact: 0 records since the last verification" in capsys.readouterr().out
    assert cli.main([*base, "prune", *c, "--before", "someday", "--export", "x"]) == 2
    assert "--before: 'someday' is not an ISO 8601" in capsys.readouterr().err
    state.write_text("{}")
    assert cli.main([*base, "verify", *c, "--resume", str(state)]) == 2
    assert "--resume: " in capsys.readouterr().err


def test_verify_reads_a_store_from_before_checkpoints(store: Store):
    run(store, 1, 2)
    with store._transaction() as tx:
        tx.execute("DROP TABLE audit_checkpoints")  # as schema 3 left it: verify never migrates
    report = verify(store)
    assert report.ok and report.checkpoint is None and report.records == 5
