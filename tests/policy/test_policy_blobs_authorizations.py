"""Blob transactions and EIP-7702 authorizations under the policy: the engine's decisions and
reasons, the schema's refusals, and the gRPC door on a real mTLS server (policy, dry run,
audit, freeze, method access)."""

import json
import re

import grpc
import pytest
from eth_account import Account
from pydantic import ValidationError

from signer.config import ClientConfig, ServerConfig
from signer.eth.transactions import GAS_PER_BLOB, UnsignedAuthorization, UnsignedTransaction
from signer.grpc.server import SignerServer
from signer.policy import Policy, PolicyConfig
from signer.service import KeyRing
from signer.v1 import signer_pb2 as pb
from tests.conftest import env_wallet, open_app
from tests.support.policy_cases import SELF, SELF_KEY, cs
from tests.support.policy_service import TRADER_ID, records_for, trader_stub

GWEI = 10**9
INBOX = bytes.fromhex("ff00000000000000000000000000000000000010")  # a batch inbox
DELEGATE = bytes.fromhex("63c0c19a282a1b52b07dd5a65b58948a07dae32b")
OTHER = bytes.fromhex("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")
BANNED = bytes.fromhex("bad0000000000000000000000000000000000bad")
CAP = 10**16


def blob_tx(blobs: int = 1, *, blob_fee: int = GWEI, max_fee: int = GWEI, gas: int = 21000,
            to: bytes = INBOX) -> UnsignedTransaction:
    return UnsignedTransaction(
        type=3, chain_id=1, nonce=0, to=to, value=0, gas_limit=gas,
        max_fee_per_gas=max_fee, max_priority_fee_per_gas=1,
        max_fee_per_blob_gas=blob_fee,
        blob_versioned_hashes=tuple(b"\x01" + bytes([i]) * 31 for i in range(blobs)),
    )


def policy(*rules: dict, chains: list[int] | None = None, deny: tuple[dict, ...] = ()) -> Policy:
    config = PolicyConfig.model_validate({
        "chains": [1] if chains is None else chains, "max_gas_fee_wei": str(CAP),
        "allow": list(rules), "deny": list(deny),
    })
    return Policy.compile("p", config)


BATCHER = {"id": "batcher", "to": cs(INBOX), "blobs_max": 6}
PLAIN = {"id": "plain", "to": cs(INBOX)}
DELEGATION = {"id": "delegation", "kind": "authorization", "delegates": [cs(DELEGATE)]}


# --- blobs ------------------------------------------------------------------------------------


def test_a_rule_without_blobs_max_never_allows_a_blob_transaction():
    decision = policy(PLAIN).evaluate(blob_tx(), SELF)
    assert not decision.allowed
    assert decision.reason == (
        "policy p: no allow rule matches: 1 blobs exceed blobs_max 0 (rule plain)")


@pytest.mark.parametrize("blobs", [1, 6])
def test_blobs_max_allows_up_to_its_count(blobs: int):
    decision = policy(PLAIN, BATCHER).evaluate(blob_tx(blobs), SELF)
    assert (decision.allowed, decision.rule_id) == (True, "batcher")


def test_more_blobs_than_blobs_max_are_denied():
    decision = policy(BATCHER).evaluate(blob_tx(7), SELF)
    assert decision.reason == (
        "policy p: no allow rule matches: 7 blobs exceed blobs_max 6 (rule batcher)")


def test_the_fee_cap_counts_blob_gas():
    execution = 21000 * GWEI  # far under the cap on its own
    blob_fee = (CAP - execution) // (2 * GAS_PER_BLOB) + 1  # two blobs push it just over
    tx = blob_tx(2, blob_fee=blob_fee)
    assert tx.max_fee_wei == execution + 2 * GAS_PER_BLOB * blob_fee > CAP
    decision = policy(BATCHER).evaluate(tx, SELF)
    assert decision.reason == (
        "policy p: gas_limit * max_fee_per_gas + 2 blobs * 131072 * max_fee_per_blob_gas = "
        f"{tx.max_fee_wei} wei exceeds max_gas_fee_wei {CAP}")
    assert policy(BATCHER).evaluate(blob_tx(2, blob_fee=blob_fee - 1), SELF).allowed


@pytest.mark.parametrize(("rule", "deny", "message"), [
    ({"id": "m", "kind": "message", "match": "x", "blobs_max": 1}, False,
     "allow[m].blobs_max: not a field of kind = 'message' rules"),
    ({"id": "d", "to": "0x" + "11" * 20, "blobs_max": 1}, True,
     "deny[d].blobs_max: only allow rules have blobs_max"),
    ({"id": "n", "to": "0x" + "11" * 20, "blobs_max": -1}, False, "greater than or equal to 0"),
])
def test_blobs_max_is_checked_at_start_up(rule: dict, deny: bool, message: str):
    config = {"chains": [1], "max_gas_fee_wei": "1", "allow": [] if deny else [rule],
              "deny": [rule] if deny else []}
    with pytest.raises(ValidationError, match=re.escape(message)):
        PolicyConfig.model_validate(config)


# --- authorizations ---------------------------------------------------------------------------


def auth(delegate: bytes = DELEGATE, chain_id: int = 1, nonce: int = 0) -> UnsignedAuthorization:
    return UnsignedAuthorization(chain_id, delegate, nonce)


def test_authorizations_are_denied_without_an_authorization_rule():
    decision = policy(PLAIN).evaluate(auth(), SELF)
    assert (decision.allowed, decision.rule_id) == (False, None)
    assert decision.reason == "policy p: no allow rule for authorizations"


def test_a_named_delegate_is_allowed_on_the_policys_chains():
    decision = policy(DELEGATION).evaluate(auth(), SELF)
    assert (decision.allowed, decision.rule_id) == (True, "delegation")
    assert decision.reason == (
        f"policy p: allowed by rule delegation: delegate {cs(DELEGATE)} on chain_id 1")


@pytest.mark.parametrize(("request_", "reason"), [
    (auth(OTHER), f"delegate {cs(OTHER)} not in [{cs(DELEGATE)}]"),
    (auth(chain_id=0), "chain_id 0 (valid on every chain) needs allow_any_chain = true"),
    (auth(chain_id=10), "chain_id 10 not in chains [1]"),
])
def test_an_authorization_outside_the_rule_is_denied_with_its_reason(request_, reason: str):
    decision = policy(DELEGATION).evaluate(request_, SELF)
    assert not decision.allowed
    assert decision.reason == f"policy p: no allow rule matches: {reason} (rule delegation)"


def test_allow_any_chain_is_the_only_way_to_chain_id_0_and_rule_chains_override():
    rule = {**DELEGATION, "chains": [10], "allow_any_chain": True}
    p = policy(rule)
    assert p.evaluate(auth(chain_id=0), SELF).allowed
    assert p.evaluate(auth(chain_id=10), SELF).allowed
    assert not p.evaluate(auth(chain_id=1), SELF).allowed


def test_a_deny_rule_on_a_delegate_wins_on_every_chain():
    deny = ({"id": "bad", "kind": "authorization", "delegates": [cs(DELEGATE)]},)
    p = policy({**DELEGATION, "allow_any_chain": True}, deny=deny)
    for chain_id in (0, 1):
        decision = p.evaluate(auth(chain_id=chain_id), SELF)
        assert (decision.allowed, decision.rule_id) == (False, "bad")
        assert decision.reason == f"policy p: denied by rule bad: delegate {cs(DELEGATE)}"


def test_authorization_rules_spend_counts():
    config = PolicyConfig.model_validate({
        "chains": [1], "budgets": {"delegations": {"limit": "2", "window": "1d"}},
        "allow": [{**DELEGATION, "spend": {"delegations": "1"}}],
    })
    assert Policy.compile("p", config).evaluate(auth(), SELF).spends == (("delegations", 1),)


@pytest.mark.parametrize(("rule", "message"), [
    ({"id": "a", "kind": "authorization"}, "allow[a].delegates: required for kind = "
                                           "'authorization' rules"),
    ({"id": "a", "kind": "authorization", "delegates": ["*"]}, "allow[a].delegates: no wildcard"),
    ({"id": "a", "kind": "authorization", "delegates": []}, "allow[a].delegates: empty"),
    ({"id": "a", "kind": "authorization", "delegates": [cs(DELEGATE)], "to": cs(INBOX)},
     "allow[a].to: not a field of kind = 'authorization' rules"),
    ({"id": "a", "kind": "authorization", "delegates": [cs(DELEGATE)], "spend": {"x": "value"}},
     "allow[a].spend.x: unknown budget"),
    ({"id": "a", "delegates": [cs(DELEGATE)], "chains": [1]},
     "allow[a].chains: not a field of kind = 'transaction' rules"),
    ({"id": "a", "kind": "authorization", "delegates": [cs(DELEGATE)], "chains": [0]},
     "greater than or equal to 1"),
])
def test_authorization_rules_are_checked_at_start_up(rule: dict, message: str):
    with pytest.raises(ValidationError, match=re.escape(message)):
        PolicyConfig.model_validate({"chains": [1], "allow": [rule]})


def test_an_authorization_rule_needs_chains_somewhere():
    with pytest.raises(ValidationError, match=r"allow\[a\].chains: required when the policy has"):
        PolicyConfig.model_validate({"allow": [{"id": "a", "kind": "authorization",
                                                "delegates": [cs(DELEGATE)]}]})
    PolicyConfig.model_validate({"allow": [{"id": "a", "kind": "authorization",
                                            "delegates": [cs(DELEGATE)], "chains": [5]}]})


def test_authorization_requests_are_never_judged_by_transaction_rules():
    """A policy that allows everything a transaction rule can still denies authorizations."""
    p = policy({"id": "any", "to": ["$self", cs(INBOX)], "value_max": "1", "blobs_max": 9})
    assert not p.evaluate(auth(), SELF).allowed


# --- over gRPC: policy, audit, freeze, method access -----------------------------------------


@pytest.fixture
def served(pki, tmp_path):
    ca, server_cert, _ = pki
    config = PolicyConfig.model_validate({
        "chains": [1], "max_gas_fee_wei": str(CAP),
        "allow": [BATCHER, DELEGATION],
        "deny": [{"id": "banned", "kind": "authorization", "delegates": [cs(BANNED)]}],
    })
    clients = {"trader": ClientConfig(
        identity=TRADER_ID, keys=["hot"], policy="trader",
        methods=["SignTransaction", "SignAuthorization", "GetAddress"])}
    app = open_app(KeyRing([env_wallet(SELF_KEY, "hot")]), tmp_path, clients=clients,
                   policies={"trader": config})
    server = SignerServer(app, ServerConfig(
        listen="127.0.0.1:0", tls_cert_file=server_cert.cert_file,
        tls_key_file=server_cert.key_file, client_ca_file=ca.cert_file))
    server.self_test_and_mark_ready()
    yield trader_stub(pki, server.port), app, server.port
    server.stop(0)


def _auth_request(delegate: bytes = DELEGATE, chain_id: int = 1) -> pb.SignAuthorizationRequest:
    return pb.SignAuthorizationRequest(key_id="hot", chain_id=chain_id, address=cs(delegate),
                                       nonce=7)


def test_sign_authorization_over_mtls_is_eth_accounts_and_audited(served):
    stub, app, _ = served
    reply = stub.SignAuthorization(_auth_request(), metadata=(("x-request-id", "auth-1"),),
                                   timeout=10)
    reference = Account.sign_authorization(
        {"chainId": 1, "address": cs(DELEGATE), "nonce": 7}, SELF_KEY)
    got = reply.authorization
    assert (got.chain_id, got.address, got.nonce, got.y_parity) == (
        1, cs(DELEGATE), 7, reference.y_parity)
    assert (got.r, got.s) == (reference.r.to_bytes(32, "big"), reference.s.to_bytes(32, "big"))
    intent, outcome = records_for(app.store, "intent", "auth-1") + records_for(
        app.store, "outcome", "auth-1")
    for record in (intent, outcome):
        assert record["method"] == "SignAuthorization"
        assert record["authorization"] == {"delegate": cs(DELEGATE), "chain_id": 1, "nonce": 7}
        assert record["rule_id"] == "delegation"
        assert record["digest"] == "0x" + bytes(reference.authorization_hash).hex()
    assert outcome["status"] == "OK"


@pytest.mark.parametrize(("request_", "code", "detail"), [
    (_auth_request(OTHER), grpc.StatusCode.PERMISSION_DENIED, f"delegate {cs(OTHER)} not in"),
    (_auth_request(chain_id=0), grpc.StatusCode.PERMISSION_DENIED, "needs allow_any_chain"),
    (pb.SignAuthorizationRequest(key_id="hot", chain_id=1, address="0x1234"),
     grpc.StatusCode.INVALID_ARGUMENT, "address: expected a 0x-prefixed 20-byte hex address"),
    (pb.SignAuthorizationRequest(key_id="hot", chain_id=1, address=cs(DELEGATE), nonce=2**64 - 1),
     grpc.StatusCode.INVALID_ARGUMENT, "nonce: 18446744073709551615 exceeds 2**64-2"),
])
def test_refused_authorizations_get_their_status(served, request_, code, detail: str):
    stub, _, _ = served
    with pytest.raises(grpc.RpcError) as caught:
        stub.SignAuthorization(request_, timeout=10)
    assert caught.value.code() == code
    assert detail in caught.value.details()


def test_a_frozen_key_signs_no_authorization(served):
    stub, app, _ = served
    app.store.freeze("hot", "incident 42", "2026-01-01T00:00:00Z")
    app.freeze = type(app.freeze)(app.store)  # read the freeze now, not within 0.5 s
    with pytest.raises(grpc.RpcError) as caught:
        stub.SignAuthorization(_auth_request(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "frozen: incident 42" in caught.value.details()


def test_a_client_without_the_method_signs_no_authorization(pki, tmp_path):
    """SignAuthorization is not among a client's default methods: it must be named."""
    assert "SignAuthorization" not in ClientConfig(identity="x", keys=["hot"]).methods
    ca, server_cert, _ = pki
    clients = {"trader": ClientConfig(identity=TRADER_ID, keys=["hot"])}
    app = open_app(KeyRing([env_wallet(SELF_KEY, "hot")]), tmp_path, clients=clients)
    server = SignerServer(app, ServerConfig(
        listen="127.0.0.1:0", tls_cert_file=server_cert.cert_file,
        tls_key_file=server_cert.key_file, client_ca_file=ca.cert_file))
    server.self_test_and_mark_ready()
    try:
        with pytest.raises(grpc.RpcError) as caught:
            trader_stub(pki, server.port).SignAuthorization(_auth_request(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert caught.value.details() == "client 'trader' may not call SignAuthorization " \
                                         "(key 'hot')"
    finally:
        server.stop(0)


def _blob_request(blobs: int) -> pb.SignTransactionRequest:
    tx = blob_tx(blobs)
    return pb.SignTransactionRequest(key_id="hot", transaction=pb.Transaction(
        type=3, chain_id=1, to=cs(INBOX), gas_limit=tx.gas_limit, max_fee_per_gas=str(GWEI),
        max_priority_fee_per_gas="1", max_fee_per_blob_gas=str(GWEI),
        blob_versioned_hashes=list(tx.blob_versioned_hashes)))


def test_blob_transactions_over_grpc_follow_blobs_max(served):
    stub, app, _ = served
    reply = stub.SignTransaction(_blob_request(6), metadata=(("x-request-id", "blob-6"),),
                                 timeout=10)
    assert Account.recover_transaction(reply.raw_transaction) == cs(SELF)
    (outcome,) = records_for(app.store, "outcome", "blob-6")
    assert outcome["transaction"]["blobs"] == 6 and outcome["transaction"]["type"] == 3
    with pytest.raises(grpc.RpcError) as caught:
        stub.SignTransaction(_blob_request(7), timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "7 blobs exceed blobs_max 6 (rule batcher)" in caught.value.details()


def test_the_dry_run_explains_blobs_and_authorizations(served):
    stub, app, _ = served
    reply = stub.EvaluatePolicy(pb.EvaluatePolicyRequest(transaction=_blob_request(7)),
                                timeout=10)
    assert not reply.allowed and "7 blobs exceed blobs_max 6" in reply.reason
    reply = stub.EvaluatePolicy(pb.EvaluatePolicyRequest(authorization=_auth_request()),
                                metadata=(("x-request-id", "dry-auth"),), timeout=10)
    assert (reply.allowed, reply.rule_id, reply.policy) == (True, "delegation", "trader")
    assert reply.reason == f"policy trader: allowed by rule delegation: delegate {cs(DELEGATE)} " \
                           "on chain_id 1"
    reply = stub.EvaluatePolicy(pb.EvaluatePolicyRequest(authorization=_auth_request(OTHER)),
                                timeout=10)
    assert not reply.allowed and f"delegate {cs(OTHER)} not in" in reply.reason
    (record,) = records_for(app.store, "dry_run", "dry-auth")
    assert record["method"] == "SignAuthorization" and record["decision"] == "allow"
    assert json.dumps(record)  # the record is plain JSON


def test_remote_account_raises_signing_refused_with_the_policys_fields(pki, served):
    from signer.client import RemoteAccount, SigningRefused, TlsFiles, open_channel

    _, _, port = served
    ca, _, trader = pki
    account = RemoteAccount(open_channel(f"127.0.0.1:{port}", TlsFiles(
        ca.cert_pem, trader.cert_pem, trader.key_pem)), "hot")
    with pytest.raises(SigningRefused) as caught:
        account.sign_authorization({"chainId": 1, "address": cs(BANNED), "nonce": 0})
    refused = caught.value
    assert isinstance(refused, grpc.RpcError)
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (refused.policy, refused.rule) == ("trader", "banned")
    assert refused.reason == f"denied by rule banned: delegate {cs(BANNED)}"
    assert refused.details() == "policy trader: " + refused.reason
    with pytest.raises(SigningRefused) as caught:
        account.sign_authorization({"chainId": 0, "address": cs(DELEGATE), "nonce": 0})
    assert (caught.value.policy, caught.value.rule) == ("trader", "")
    assert caught.value.reason == ("no allow rule matches: chain_id 0 (valid on every chain) "
                                   "needs allow_any_chain = true (rule delegation)")
    tx = {"type": 3, "chainId": 1, "nonce": 0, "to": cs(INBOX), "value": 0, "gas": 21000,
          "maxFeePerGas": GWEI, "maxPriorityFeePerGas": 1, "maxFeePerBlobGas": GWEI,
          "blobVersionedHashes": list(blob_tx(7).blob_versioned_hashes)}
    (result,) = account.sign_transactions([tx])
    assert isinstance(result, SigningRefused)
    assert result.code() == grpc.StatusCode.PERMISSION_DENIED and result.rule is None
    assert "7 blobs exceed blobs_max 6" in result.details()
    signed = account.sign_transaction({**tx, "blobVersionedHashes": tx["blobVersionedHashes"][:6]})
    assert Account.recover_transaction(signed.raw_transaction) == account.address
