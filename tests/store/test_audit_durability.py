"""One flush per signature, or less: the intent is committed without waiting for the disk, the
outcome is flushed, and concurrent callers share their flushes (group commit). Counted with the
service's own metrics on real SQLite and real PostgreSQL."""

import threading

from prometheus_client import REGISTRY

from signer.app.audit import verify
from signer.app.caller import Caller
from signer.service import KeyRing
from signer.store import Store
from tests.conftest import env_wallet, open_app

CALLERS = 16
PER_CALLER = 25


def counted() -> tuple[float, float, float]:
    def value(name: str) -> float:
        return REGISTRY.get_sample_value(name) or 0.0

    return (value("wallet_signer_audit_flushes_total"), value("wallet_signer_audit_commits_total"),
            value("wallet_signer_audit_records_total"))


def sign(app, n: int, i: int) -> None:  # type: ignore[no-untyped-def]
    with app.signing(Caller("ipv4:127.0.0.1:1", f"r{n}-{i}"), "SignMessage", "hot") as request:
        request.sign_message(f"{n}-{i}".encode(), 5.0)


def test_one_caller_flushes_once_per_signature_and_commits_twice(store: Store, env_key: str):
    app = open_app(KeyRing([env_wallet(env_key)]), store=store)
    before = counted()
    for i in range(20):
        sign(app, 0, i)
    flushes, commits, records = (a - b for a, b in zip(counted(), before, strict=True))
    assert (flushes, commits, records) == (20, 40, 40)  # the intent's commit is not flushed
    report = verify(store)
    assert report.ok and report.incomplete == []


def test_sixteen_callers_share_flushes(store: Store, env_key: str):
    app = open_app(KeyRing([env_wallet(env_key)]), store=store)
    start = threading.Barrier(CALLERS)
    errors: list[BaseException] = []

    def caller(n: int) -> None:
        start.wait(10)
        try:
            for i in range(PER_CALLER):
                sign(app, n, i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(CALLERS)]
    before = counted()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    flushes, commits, records = (a - b for a, b in zip(counted(), before, strict=True))
    signatures = CALLERS * PER_CALLER
    assert records == 2 * signatures
    # group commit: one flush carries the outcomes (and intents) of several callers
    print(f"{store.kind}: {flushes / signatures:.3f} flushes, {commits / signatures:.3f} commits "
          "per signature at 16 callers")
    assert flushes / signatures < 0.5, (flushes, commits, signatures)
    assert commits < 2 * signatures
    report = verify(store)
    assert report.ok and report.incomplete == []
    assert report.records == 1 + 2 * signatures


def test_sqlite_sets_synchronous_for_each_commit_it_needs(sqlite_store_url: str):
    """The connection remembers its `synchronous` setting to skip a PRAGMA a transaction; a
    durable commit must still run at FULL after an intent's NORMAL on the same connection."""
    from signer.store import open_store

    store = open_store(sqlite_store_url)
    store.migrate()

    def setting(durable: bool) -> int:
        with store.batch(durable=durable) as batch:
            return int(batch._tx.execute("PRAGMA synchronous").fetchone()[0])

    try:
        assert [setting(d) for d in (True, False, False, True, False, True)] == [2, 1, 1, 2, 1, 2]
        with store._transaction() as tx:  # every other transaction is durable
            assert tx.execute("PRAGMA synchronous").fetchone()[0] == 2
    finally:
        store.close()
