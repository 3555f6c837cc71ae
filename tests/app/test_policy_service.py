"""The signing policy in the service: the red-team table over gRPC on a real mTLS server,
budgets shared by concurrent callers and replicas, windows that roll, and every allow rule kind
mined on a real EVM, so the policy never blocks what it claims to allow."""

import json
import os
import signal
import threading
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from eth_account import Account
from eth_tester import EthereumTester, PyEVMBackend
from eth_utils import to_checksum_address

from signer.config import ClientConfig, ServerConfig
from signer.errors import BackendUnavailable
from signer.grpc.server import SignerServer
from signer.policy import PolicyConfig
from signer.service import KeyRing
from signer.store import open_store
from signer.v1 import signer_pb2 as pb
from tests.conftest import env_wallet, open_app
from tests.support.policy_cases import ATTACKS, LEGITIMATE, SELF_KEY, signing_request, trader_config
from tests.support.policy_service import TRADER_ID, records_for, trader_stub
from tests.support.serve_process import start_serve

ETHER = 10**18
GWEI = 10**9
def mtls_server(pki, state_dir: Path, policies: dict, key: str = SELF_KEY, **app_options):
    ca, server_cert, _ = pki
    clients = {"trader": ClientConfig(identity=TRADER_ID, keys=["hot"], policy="trader")}
    app = open_app(KeyRing([env_wallet(key, "hot")]), state_dir, clients=clients,
                   policies=policies, **app_options)
    server = SignerServer(app, ServerConfig(
        listen="127.0.0.1:0", tls_cert_file=server_cert.cert_file,
        tls_key_file=server_cert.key_file, client_ca_file=ca.cert_file))
    server.self_test_and_mark_ready()
    return server, app


@pytest.fixture(scope="module")
def red_team(pki, tmp_path_factory):
    policy = PolicyConfig.model_validate(trader_config())
    server, app = mtls_server(pki, tmp_path_factory.mktemp("state"), {"trader": policy})
    yield trader_stub(pki, server.port), app
    server.stop(0)


@pytest.mark.parametrize("case", LEGITIMATE, ids=[c.name for c in LEGITIMATE])
def test_legitimate_flows_are_signed(red_team, case):
    stub, _ = red_team
    method, request = signing_request(case, "hot")
    reply = getattr(stub, method)(request, timeout=10)
    assert reply.ByteSize() > 0


@pytest.mark.parametrize("case", ATTACKS, ids=[c.name for c in ATTACKS])
def test_drain_attempts_are_denied_with_their_reason(red_team, case):
    stub, app = red_team
    method, request = signing_request(case, "hot")
    with pytest.raises(grpc.RpcError) as caught:
        getattr(stub, method)(request, metadata=(("x-request-id", "rt-" + case.name[:40]),),
                              timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.details() == case.reason
    outcome = records_for(app.store, "outcome", "rt-" + case.name[:40])[-1]
    assert (outcome["decision"], outcome["status"], outcome["reason"]) == (
        "deny", "PERMISSION_DENIED", case.reason)
    assert outcome["client"] == "trader" and outcome["policy"] == "trader"
    assert outcome["digest"].startswith("0x") and len(outcome["digest"]) == 66


# --- budgets ----------------------------------------------------------------------------------

TREASURY = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
BUDGET_POLICY = {
    "chains": [1], "max_gas_fee_wei": "5000000000000000",
    "budgets": {"eth_daily": {"limit": str(2 * ETHER), "window": "24h"}},
    "allow": [{"id": "eth-to-treasury", "to": TREASURY, "value_max": str(ETHER // 10),
               "spend": {"eth_daily": "value"}}],
}


def tenth(nonce: int) -> pb.SignTransactionRequest:
    return pb.SignTransactionRequest(key_id="hot", transaction=pb.Transaction(
        type=2, chain_id=1, nonce=nonce, to=TREASURY, value=str(ETHER // 10), gas_limit=21000,
        max_fee_per_gas=str(30 * GWEI), max_priority_fee_per_gas=str(GWEI)))


def _fire(stubs, count: int) -> tuple[int, list[str]]:
    denied: list[str] = []
    signed = 0
    lock = threading.Lock()

    def one(n: int) -> None:
        nonlocal signed
        try:
            stubs[n % len(stubs)].SignTransaction(tenth(n), timeout=60)
            with lock:
                signed += 1
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.PERMISSION_DENIED, exc.details()
            with lock:
                denied.append(exc.details())

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(one, range(count)))
    return signed, denied


EXHAUSTED = "policy trader: budget eth_daily exhausted: "


def test_a_window_is_never_overspent_by_concurrent_callers_sqlite(pki, tmp_path):
    server, _ = mtls_server(pki, tmp_path, {"trader": PolicyConfig.model_validate(BUDGET_POLICY)})
    try:
        signed, denied = _fire([trader_stub(pki, server.port)], 200)
    finally:
        server.stop(0)
    assert signed == 20 and len(denied) == 180
    assert all(d.startswith(EXHAUSTED) and d.endswith(
        f"of {2 * ETHER} spent in the last 24h, this request needs {ETHER // 10} "
        "(rule eth-to-treasury)") for d in denied)


def test_two_replicas_on_postgresql_share_one_window(pki, tmp_path, postgres_db):
    ca, server_cert, _ = pki
    policy_toml = _toml_policy(BUDGET_POLICY)
    env = {"HOT_WALLET_KEY": SELF_KEY}
    replicas = []
    try:
        for i in range(2):
            directory = tmp_path / f"r{i}"
            directory.mkdir()
            config = directory / "signer.toml"
            config.write_text(
                f'[server]\nlisten = "127.0.0.1:0"\ntls_cert_file = "{server_cert.cert_file}"\n'
                f'tls_key_file = "{server_cert.key_file}"\nclient_ca_file = "{ca.cert_file}"\n'
                f'[store]\nurl = "{postgres_db.url}"\n'
                '[keys.hot]\nbackend = "env"\nprivate_key_env = "HOT_WALLET_KEY"\n'
                f'[clients.trader]\nidentity = "{TRADER_ID}"\nkeys = ["hot"]\npolicy = "trader"\n'
                + policy_toml
            )
            replicas.append(start_serve(directory, config, env))
        stubs = [trader_stub(pki, int(r.target.rsplit(":", 1)[1])) for r in replicas]
        signed, denied = _fire(stubs, 200)
    finally:
        for replica in replicas:
            replica.proc.send_signal(signal.SIGTERM)
            replica.proc.wait(20)
    assert signed == 20 and len(denied) == 180
    assert all(d.startswith(EXHAUSTED) for d in denied)


def _toml_policy(policy: dict) -> str:
    lines = ["[policies.trader]", f"chains = {policy['chains']}",
             f'max_gas_fee_wei = "{policy["max_gas_fee_wei"]}"']
    for name, budget in policy.get("budgets", {}).items():
        lines.append(f'budgets.{name} = {{ limit = "{budget["limit"]}", window = "{budget["window"]}" }}')
    for rule in policy["allow"]:
        lines.append("[[policies.trader.allow]]")
        for key, value in rule.items():
            if isinstance(value, dict):
                inner = ", ".join(f'{k} = "{v}"' for k, v in value.items())
                lines.append(f"{key} = {{ {inner} }}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)
    return text


def test_budgets_roll_with_the_window(pki, tmp_path):
    now = [1_000_000.0]
    server, _ = mtls_server(pki, tmp_path, {"trader": PolicyConfig.model_validate(BUDGET_POLICY)},
                            clock=lambda: now[0])
    try:
        stub = trader_stub(pki, server.port)
        for n in range(20):
            stub.SignTransaction(tenth(n), timeout=10)
        with pytest.raises(grpc.RpcError) as caught:
            stub.SignTransaction(tenth(20), timeout=10)
        assert caught.value.details().startswith(EXHAUSTED + f"{2 * ETHER} of {2 * ETHER}")
        now[0] += 24 * 3600 - 1  # still inside the window
        with pytest.raises(grpc.RpcError):
            stub.SignTransaction(tenth(21), timeout=10)
        now[0] += 2  # the first spends have left the window
        stub.SignTransaction(tenth(22), timeout=10)
    finally:
        server.stop(0)


def test_a_failed_signature_gives_its_reservation_back(pki, tmp_path):
    server, app = mtls_server(pki, tmp_path, {"trader": PolicyConfig.model_validate(BUDGET_POLICY)})
    try:
        stub = trader_stub(pki, server.port)
        backend = app.keyring.get("hot").backend
        inner = backend.sign_digest

        def session_lost(digest: bytes, timeout: float | None) -> bytes:  # a backend fault
            raise BackendUnavailable("hsm session lost")

        backend.sign_digest = session_lost
        for n in range(5):
            with pytest.raises(grpc.RpcError) as caught:
                stub.SignTransaction(tenth(n), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        backend.sign_digest = inner
        for n in range(20):  # the whole window is still there
            stub.SignTransaction(tenth(100 + n), timeout=10)
    finally:
        server.stop(0)


# init code returning a 10-byte runtime that returns 42
INIT_CODE = bytes.fromhex("600a600c600039600a6000f3602a60005260206000f3")


# --- every allow rule kind, mined -------------------------------------------------------------

def test_every_allow_rule_kind_is_mined(pki, tmp_path):
    chain = EthereumTester(PyEVMBackend())
    chain_id = chain.backend.chain.chain_id
    key = "0x" + os.urandom(32).hex()
    sender = Account.from_key(key).address
    chain.send_transaction({"from": chain.get_accounts()[0], "to": sender, "value": 10 * ETHER,
                            "gas": 21000, "max_fee_per_gas": 100 * GWEI,
                            "max_priority_fee_per_gas": GWEI})
    token, batcher, recipient = (to_checksum_address(os.urandom(20)) for _ in range(3))
    policy = PolicyConfig.model_validate({
        "chains": [chain_id], "max_gas_fee_wei": str(ETHER),
        "sets": {"treasury": [recipient]},
        "budgets": {"eth": {"limit": str(ETHER), "window": "1h"},
                    "count": {"limit": "10", "window": "1h"}},
        "allow": [
            {"id": "native", "to": "@treasury", "value_max": str(ETHER // 10),
             "spend": {"eth": "value", "count": "1"}},
            {"id": "token", "to": token, "call": "transfer(address to,uint256 amount)",
             "where": {"to": {"in": "@treasury"}, "amount": {"lte": "1000"}}},
            {"id": "deploy", "to": "create"},
            {"id": "delegate", "to": "$self", "delegates": [batcher]},
        ],
    })
    server, _ = mtls_server(pki, tmp_path, {"trader": policy}, key=key)
    stub = trader_stub(pki, server.port)
    from tests.support.policy_cases import calldata

    try:
        fees = {"max_fee_per_gas": str(10 * GWEI), "max_priority_fee_per_gas": str(GWEI)}
        requests = [
            pb.Transaction(type=2, to=recipient, value=str(ETHER // 10), gas_limit=21000, **fees),
            pb.Transaction(type=2, to=token, gas_limit=60000,
                           data=calldata("transfer", recipient, 1000), **fees),
            pb.Transaction(type=2, to="", gas_limit=100000, data=INIT_CODE, **fees),
            pb.Transaction(type=4, to=sender, gas_limit=80000, **fees),
        ]
        authority = Account.from_key(key)
        for n, msg in enumerate(requests):
            msg.chain_id, msg.nonce = chain_id, chain.get_nonce(sender)
            if msg.type == 4:
                auth = Account.sign_authorization(
                    {"chainId": chain_id, "address": batcher, "nonce": msg.nonce + 1},
                    authority.key)
                msg.authorization_list.add(
                    chain_id=auth.chain_id, address=batcher, nonce=auth.nonce,
                    y_parity=auth.y_parity, r=auth.r.to_bytes(32, "big"),
                    s=auth.s.to_bytes(32, "big"))
            reply = stub.SignTransaction(
                pb.SignTransactionRequest(key_id="hot", transaction=msg), timeout=10)
            tx_hash = chain.send_raw_transaction("0x" + bytes(reply.raw_transaction).hex())
            assert chain.get_transaction_receipt(tx_hash)["status"] == 1, n
    finally:
        server.stop(0)


# --- dry run ----------------------------------------------------------------------------------

def _evaluate_request(case, key_id: str) -> pb.EvaluatePolicyRequest:
    method, request = signing_request(case, key_id)
    field = {"SignTransaction": "transaction", "SignMessage": "message",
             "SignTypedData": "typed_data"}[method]
    return pb.EvaluatePolicyRequest(**{field: request})


@pytest.mark.parametrize("case", LEGITIMATE[:4] + ATTACKS, ids=[c.name for c in LEGITIMATE[:4] + ATTACKS])
def test_evaluate_policy_answers_what_signing_would(red_team, case):
    stub, app = red_team
    reply = stub.EvaluatePolicy(_evaluate_request(case, "hot"),
                                metadata=(("x-request-id", "dry-" + case.name[:40]),), timeout=10)
    assert (reply.allowed, reply.reason, reply.policy) == (case.allowed, case.reason, "trader")
    assert reply.rule_id == (case.rule_id or "")
    assert [(b.name, int(b.request_spends)) for b in reply.budgets] == list(case.spends)
    (record,) = records_for(app.store, "dry_run", "dry-" + case.name[:40])
    assert record["decision"] == ("allow" if case.allowed else "deny")
    assert record["reason"] == case.reason


def test_evaluate_policy_spends_nothing_and_shows_the_window(pki, tmp_path):
    server, _ = mtls_server(pki, tmp_path, {"trader": PolicyConfig.model_validate(BUDGET_POLICY)})
    try:
        stub = trader_stub(pki, server.port)
        dry = pb.EvaluatePolicyRequest(transaction=tenth(0))
        for _ in range(30):
            reply = stub.EvaluatePolicy(dry, timeout=10)
            assert reply.allowed
        for n in range(15):
            stub.SignTransaction(tenth(n), timeout=10)
        (budget,) = stub.EvaluatePolicy(dry, timeout=10).budgets
        assert (budget.name, int(budget.spent), int(budget.limit), budget.window_seconds,
                int(budget.request_spends)) == ("eth_daily", 15 * ETHER // 10, 2 * ETHER, 86400,
                                                ETHER // 10)
        for n in range(5):
            stub.SignTransaction(tenth(100 + n), timeout=10)
        reply = stub.EvaluatePolicy(dry, timeout=10)
        assert not reply.allowed and reply.reason.startswith(EXHAUSTED)
        with pytest.raises(grpc.RpcError) as caught:
            stub.EvaluatePolicy(pb.EvaluatePolicyRequest(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as caught:
            stub.EvaluatePolicy(pb.EvaluatePolicyRequest(
                message=pb.SignMessageRequest(key_id="cold", message=b"x")), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop(0)


# --- reload -----------------------------------------------------------------------------------

def test_sighup_reloads_policies_atomically_and_audits_them(pki, tmp_path):
    ca, server_cert, _ = pki
    config = tmp_path / "signer.toml"
    head = (
        f'[server]\nlisten = "127.0.0.1:0"\ntls_cert_file = "{server_cert.cert_file}"\n'
        f'tls_key_file = "{server_cert.key_file}"\nclient_ca_file = "{ca.cert_file}"\n'
        f'[store]\nurl = "sqlite://{tmp_path / "state.db"}"\n'
        '[keys.hot]\nbackend = "env"\nprivate_key_env = "HOT_WALLET_KEY"\n'
        f'[clients.trader]\nidentity = "{TRADER_ID}"\nkeys = ["hot"]\npolicy = "trader"\n'
    )
    config.write_text(head + _toml_policy(BUDGET_POLICY))
    served = start_serve(tmp_path, config, {"HOT_WALLET_KEY": SELF_KEY})
    try:
        stub = trader_stub(pki, int(served.target.rsplit(":", 1)[1]))
        stub.SignTransaction(tenth(0), timeout=10)
        # a bad file: the old policy stays and the log says why
        config.write_text(head + _toml_policy(BUDGET_POLICY).replace("chains = [1]", "chains = []"))
        served.proc.send_signal(signal.SIGHUP)
        _wait_for_log(served, "config reload failed, keeping the current clients and policies")
        stub.SignTransaction(tenth(1), timeout=10)
        # a stricter policy: a tenth of an ether is now over value_max
        stricter = dict(BUDGET_POLICY, allow=[dict(BUDGET_POLICY["allow"][0],
                                                   value_max=str(ETHER // 100))])
        config.write_text(head + _toml_policy(stricter))
        served.proc.send_signal(signal.SIGHUP)
        _wait_for_log(served, "config reloaded: 1 clients, policies trader=")
        with pytest.raises(grpc.RpcError) as caught:
            stub.SignTransaction(tenth(2), timeout=10)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "value 100000000000000000 exceeds value_max 10000000000000000" in (
            caught.value.details())
    finally:
        served.proc.send_signal(signal.SIGTERM)
        served.proc.wait(20)
    store = open_store(f"sqlite://{tmp_path / 'state.db'}")
    try:
        reloads = [json.loads(r.body) for w in store.writers() for r in store.audit_rows(w)
                   if json.loads(r.body).get("action") == "reload"]
        assert len(reloads) == 1
        assert reloads[0]["policies"] == {
            "trader": PolicyConfig.model_validate(stricter).fingerprint()}
    finally:
        store.close()


def _wait_for_log(served, text: str, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while text not in served.log():
        assert time.monotonic() < deadline, f"not logged: {text}\n{served.log()}"
        time.sleep(0.05)


def test_policy_decisions_and_budget_use_are_metrics(pki, tmp_path):
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    allow = dict(client="trader", policy="trader", decision="allow")
    before = value("wallet_signer_policy_decisions_total", **allow)
    server, _ = mtls_server(pki, tmp_path, {"trader": PolicyConfig.model_validate(BUDGET_POLICY)})
    try:
        stub = trader_stub(pki, server.port)
        for n in range(5):
            stub.SignTransaction(tenth(n), timeout=10)
    finally:
        server.stop(0)
    assert value("wallet_signer_policy_decisions_total", **allow) == before + 5
    assert value("wallet_signer_budget_spent_ratio", client="trader", budget="eth_daily") == 0.25
