"""Several replicas on one PostgreSQL store, and the store going away: a freeze on one replica
holds on the other within a second, both write one verifiable audit log, and a store that is
down makes signing fail closed until it returns."""

import json
import time

import grpc
import pytest

from signer import cli
from signer.app.audit import verify
from signer.service import KeyRing
from signer.store import open_store
from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc
from tests.conftest import env_wallet, open_app
from tests.support.serve_process import replica_config, start_serve, stop_serve

MESSAGE = pb.SignMessageRequest(key_id="hot", message=b"replica")





def test_two_replicas_share_freeze_and_one_audit_log(tmp_path, postgres_db, env_key, capsys):
    pw_file = postgres_db.write_password_file(tmp_path / "pg-password")
    extra = f'password_file = "{pw_file}"\n'
    url = postgres_db.password_url
    assert postgres_db.password not in url
    configs = [replica_config(tmp_path / f"r{i}", url, extra) for i in (1, 2)]
    replicas = [start_serve(c.parent, c, {"HOT_WALLET_KEY": env_key}) for c in configs]
    try:
        stubs = [pb_grpc.SignerServiceStub(grpc.insecure_channel(r.target)) for r in replicas]
        for stub in stubs:
            stub.SignMessage(MESSAGE, timeout=10)
        # freeze through replica 1's config; replica 2 must refuse within a second
        assert cli.main(["keys", "freeze", "hot", "--reason", "drill", "--config",
                         str(configs[0])]) == 0
        frozen_at = time.monotonic()
        while True:
            try:
                stubs[1].SignMessage(MESSAGE, timeout=10)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert exc.details() == "key 'hot' is frozen: drill"
                break
            assert time.monotonic() - frozen_at < 1.0
            time.sleep(0.02)
        with pytest.raises(grpc.RpcError):
            stubs[0].SignMessage(MESSAGE, timeout=10)
        assert cli.main(["keys", "unfreeze", "hot", "--config", str(configs[1])]) == 0
        time.sleep(0.6)
        for stub in stubs:
            stub.SignMessage(MESSAGE, timeout=10)
        capsys.readouterr()
        assert cli.main(["audit", "verify", "--config", str(configs[1])]) == 0
        assert "records in 4 chains" in capsys.readouterr().out  # 2 replicas + 2 commands
    finally:
        for replica in replicas:
            stop_serve(replica)
    for replica in replicas:
        assert postgres_db.password not in replica.log()
    store = open_store(postgres_db.url)
    try:
        outcomes = [
            json.loads(r.body)
            for w in store.writers()
            for r in store.audit_rows(w)
            if json.loads(r.body)["kind"] == "outcome"
        ]
        statuses = [o["status"] for o in outcomes]
        assert statuses.count("FAILED_PRECONDITION") == 2  # one refusal on each replica
        assert statuses.count("OK") == len(statuses) - 2 >= 4
        assert {o["peer"] for o in outcomes} and len({o["event"] for o in outcomes}) == len(outcomes)
        assert verify(store).ok
    finally:
        store.close()


def test_store_down_fails_closed_and_recovers(postgres_db, env_key, serve):
    signer = env_wallet(env_key)
    signed = 0
    inner = signer.backend.sign_digest

    def counting(digest, timeout):  # the real env backend, counted
        nonlocal signed
        signed += 1
        return inner(digest, timeout)

    signer.backend.sign_digest = counting  # type: ignore[method-assign]
    store = open_store(postgres_db.url, connect_timeout=2)
    store.migrate()
    app = open_app(KeyRing([signer]), store=store)
    stub = serve(app).stub
    stub.SignMessage(MESSAGE, timeout=10)
    before = signed
    postgres_db.stop("immediate")
    try:
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as caught:
                stub.SignMessage(MESSAGE, timeout=15)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "unavailable" in caught.value.details()
        assert signed == before  # nothing was signed while the store was down
        assert stub.GetAddress(pb.GetAddressRequest(key_id="hot"), timeout=10).address
    finally:
        postgres_db.start()
    deadline = time.monotonic() + 15
    while True:
        try:
            stub.SignMessage(MESSAGE, timeout=15)
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() < deadline, "did not recover after the store returned"
            time.sleep(0.2)
    assert signed == before + 1
    report = verify(store)
    assert report.ok, report.problem
