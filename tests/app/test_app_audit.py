"""The application path over a real gRPC server: every signing request is audited exactly once
(intent before the backend signs, outcome before the answer), the store failing closes the
door, and a frozen key refuses within a second."""

import json
import time

import grpc
import pytest

from signer.admin.state import freeze_key, unfreeze_key
from signer.app.audit import verify
from signer.errors import StoreUnavailable
from signer.service import KeyRing
from signer.store import Store
from signer.store.sql import Batch
from signer.v1 import signer_pb2 as pb
from tests.conftest import env_wallet, open_app
from tests.support.audit import by_request, records, state_config
from tests.support.reference_vectors import load_text

TX = pb.Transaction(
    type=2, chain_id=1, nonce=3, to="0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", value="1",
    gas_limit=21000, max_fee_per_gas="30000000000", max_priority_fee_per_gas="1000000000",
    data=b"\xde\xad\xbe\xef",
)
MAIL = load_text("eip712_mail")


def call(method, request, request_id: str):
    try:
        reply = method(request, metadata=(("x-request-id", request_id),), timeout=10)
        return reply, grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return None, exc.code()


def test_a_mixed_run_has_one_intent_and_one_outcome_per_request(serve, env_key, tmp_path):
    app = open_app(KeyRing([env_wallet(env_key)]), tmp_path)
    running = serve(app)
    stub = running.stub
    typed = json.loads(MAIL)["typed_data"]
    calls = {
        "tx": (stub.SignTransaction, pb.SignTransactionRequest(key_id="hot", transaction=TX)),
        "msg": (stub.SignMessage, pb.SignMessageRequest(key_id="hot", message=b"hello")),
        "typed": (stub.SignTypedData,
                  pb.SignTypedDataRequest(key_id="hot", typed_data_json=json.dumps(typed))),
        "bad-tx": (stub.SignTransaction, pb.SignTransactionRequest(
            key_id="hot", transaction=pb.Transaction(type=2, chain_id=1, to="0x1234"))),
        "unknown-key": (stub.SignMessage, pb.SignMessageRequest(key_id="cold", message=b"x")),
    }
    results = {rid: call(method, request, rid) for rid, (method, request) in calls.items()}
    freeze_key(state_config(tmp_path), "hot", "suspected prompt injection")
    time.sleep(0.6)  # the freeze is read at most 0.5 s old
    results["frozen"] = call(stub.SignMessage, pb.SignMessageRequest(key_id="hot", message=b"y"),
                             "frozen")

    audited = by_request(app.store)
    assert set(audited) == set(results)
    for request_id, (reply, status) in results.items():
        intent, outcome = audited[request_id]["intent"], audited[request_id]["outcome"]
        assert outcome["status"] == status.name
        assert intent["event"] == outcome["event"]
        assert outcome["peer"].startswith("ipv4:127.0.0.1:")
        assert outcome["method"] == ("SignTransaction" if "tx" in request_id else
                                     "SignTypedData" if request_id == "typed" else "SignMessage")
    tx_reply, _ = results["tx"]
    tx_outcome = audited["tx"]["outcome"]
    assert tx_outcome["result"] == "0x" + tx_reply.transaction_hash.hex()
    assert tx_outcome["decision"] == "allow"
    assert tx_outcome["transaction"] == {
        "type": 2, "chain_id": 1, "nonce": 3, "to": TX.to, "value": "1", "data_bytes": 4,
        "data_keccak": "0xd4fd4e189132273036449fc9e11198c739161b4c0116a9a2dccdfa1c492006f1",
    }
    assert audited["msg"]["intent"]["digest"] == "0x" + results["msg"][0].digest.hex()
    assert audited["bad-tx"]["outcome"]["status"] == "INVALID_ARGUMENT"
    assert "to:" in audited["bad-tx"]["outcome"]["reason"]
    assert audited["frozen"]["outcome"]["decision"] == "deny"
    assert audited["frozen"]["outcome"]["reason"] == (
        "key 'hot' is frozen: suspected prompt injection"
    )
    assert verify(app.store).ok
    # never a secret: the key is in no record and nowhere in the database files
    key_hex = env_key.removeprefix("0x").lower()
    for path in tmp_path.glob("state.db*"):
        assert key_hex.encode() not in path.read_bytes().lower()
    assert "calldata" not in json.dumps(records(app.store))


def test_freeze_refuses_within_a_second_and_unfreeze_restores(serve, env_key, tmp_path):
    app = open_app(KeyRing([env_wallet(env_key)]), tmp_path)
    stub = serve(app).stub
    request = pb.SignMessageRequest(key_id="hot", message=b"x")
    stub.SignMessage(request, timeout=5)
    freeze_key(state_config(tmp_path), "hot", "incident 42")
    frozen_at = time.monotonic()
    while True:
        try:
            stub.SignMessage(request, timeout=5)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert exc.details() == "key 'hot' is frozen: incident 42"
            break
        assert time.monotonic() - frozen_at < 1.0, "freeze not enforced within a second"
        time.sleep(0.02)
    listed = stub.ListKeys(pb.ListKeysRequest(), timeout=5).keys
    assert [(k.key_id, k.frozen, k.frozen_reason) for k in listed] == [("hot", True, "incident 42")]
    assert unfreeze_key(state_config(tmp_path), "hot")
    time.sleep(0.6)
    assert len(stub.SignMessage(request, timeout=5).signature) == 65
    actions = [r for r in _all(app.store) if r["kind"] == "admin"]
    assert [(a["action"], a["key_id"]) for a in actions] == [("freeze", "hot"), ("unfreeze", "hot")]
    assert verify(app.store).ok


class _Counting:
    """Counts the backend's signatures (the real env backend signs)."""

    def __init__(self, signer):
        self.signer, self.count = signer, 0
        inner = signer.backend.sign_digest

        def counted(digest, timeout):
            self.count += 1
            return inner(digest, timeout)

        signer.backend.sign_digest = counted


def test_no_signature_when_the_intent_cannot_be_written(serve, env_key, tmp_path, monkeypatch):
    signer = env_wallet(env_key)
    counter = _Counting(signer)
    app = open_app(KeyRing([signer]), tmp_path)
    stub = serve(app).stub
    signed_before = counter.count

    def store_down(lock=False, durable=True):  # the store failing, injected at its boundary
        raise StoreUnavailable("state store (sqlite) unavailable: nothing was signed")

    monkeypatch.setattr(app.store, "batch", store_down)
    with pytest.raises(grpc.RpcError) as caught:
        stub.SignTransaction(pb.SignTransactionRequest(key_id="hot", transaction=TX), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "nothing was signed" in caught.value.details()
    assert counter.count == signed_before  # the backend was never asked
    monkeypatch.undo()
    stub.SignTransaction(pb.SignTransactionRequest(key_id="hot", transaction=TX), timeout=5)
    assert counter.count == signed_before + 1  # the service recovers with the store


def test_a_signature_whose_outcome_cannot_be_written_is_not_released(serve, env_key, tmp_path,
                                                                      monkeypatch):
    app = open_app(KeyRing([env_wallet(env_key)]), tmp_path)
    stub = serve(app).stub
    append = Batch.append

    def fail_outcomes(batch, rows):  # the store failing after the intent committed
        if any(json.loads(r.body)["kind"] == "outcome" for r in rows):
            raise StoreUnavailable("state store (sqlite) unavailable: nothing was signed")
        append(batch, rows)

    monkeypatch.setattr(Batch, "append", fail_outcomes)
    with pytest.raises(grpc.RpcError) as caught:
        stub.SignMessage(pb.SignMessageRequest(key_id="hot", message=b"m"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # an error carries no signature
    assert "not released" in caught.value.details()
    monkeypatch.undo()
    report = verify(app.store)
    assert report.ok and len(report.incomplete) == 1  # the intent, with no outcome recorded


def _all(store: Store) -> list[dict]:
    return [json.loads(r.body) for w in store.writers() for r in store.audit_rows(w)]

