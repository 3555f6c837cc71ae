"""Blob transactions and EIP-7702 authorizations signed here, mined by anvil.

Each proof runs on anvil at `--hardfork prague` (EIP-4844 blob proofs) and `bpo2`, the newest
fork anvil 1.7.1 runs (Osaka's EIP-7594 cell proofs; bpo3 and later panic "not implemented").
The signing key is not one of anvil's dev accounts. Policy refusals over JSON-RPC go through
the transport-free Dispatcher with a real client certificate."""

import json

import pytest
from eth_account import Account
from eth_keys import keys
from eth_utils import keccak, to_checksum_address

from signer.app.caller import Caller
from signer.config import ClientConfig
from signer.eth.blobs import BYTES_PER_BLOB, network_form, sidecar
from signer.eth.transactions import GAS_PER_BLOB, UnsignedAuthorization, authorization_digest
from signer.jsonrpc.dispatch import Dispatcher
from signer.jsonrpc.sending import Filler
from signer.jsonrpc.upstream import Upstream
from signer.policy import PolicyConfig
from signer.service import KeyRing
from signer.v1 import signer_pb2 as pb
from tests.conftest import env_wallet, open_app
from tests.jsonrpc.conftest import Anvil, Door, Tools, result, rpc, run_node, running_anvil
from tests.support.eth_transactions import to_proto
from tests.support.tls_certs import CertificateAuthority

# bpo2 is the newest fork anvil 1.7.1 runs; Osaka's rules (EIP-7594) hold from Osaka on
HARDFORKS = {"prague": "eip4844", "bpo2": "eip7594"}
INBOX = to_checksum_address("0x" + "ff" * 19 + "42")  # a rollup's batch inbox
DELEGATE = to_checksum_address("0x" + "de" * 20)
GWEI = 10**9


@pytest.fixture(scope="module", params=list(HARDFORKS))
def forked(request: pytest.FixtureRequest, tools: Tools):
    with running_anvil(tools, "--hardfork", request.param) as node:
        yield request.param, node


def blob(fill: int) -> bytes:
    return (b"\x00" + bytes([fill]) * 31) * 4096


def balance(node: Anvil, address: str) -> int:
    return int(result(node.url, "eth_getBalance", [address, "latest"]), 16)


def fresh_door(door_factory, node: Anvil) -> Door:
    door: Door = door_factory(upstream=node.url, fund=False)
    node.fund(door.address)
    return door


def fees(node: Anvil) -> dict[str, int]:
    block = result(node.url, "eth_getBlockByNumber", ["latest", False])
    return {"maxFeePerGas": 2 * int(block["baseFeePerGas"], 16) + GWEI,
            "maxPriorityFeePerGas": GWEI,
            "maxFeePerBlobGas": 2 * int(result(node.url, "eth_blobBaseFee"), 16)}


def assert_paid_blob_gas(node: Anvil, address: str, before: int, receipt: dict, blobs: int):
    blob_gas = int(receipt["blobGasUsed"], 16)
    assert blob_gas == blobs * GAS_PER_BLOB
    blob_fee = blob_gas * int(receipt["blobGasPrice"], 16)
    execution = int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)
    assert blob_fee > 0
    assert before - balance(node, address) == execution + blob_fee


# --- EIP-4844 ---------------------------------------------------------------------------------


def test_the_node_tells_which_sidecar_form_it_takes(forked):
    fork, node = forked
    assert Filler(Upstream(node.url, 5)).blob_network_form() == HARDFORKS[fork]


def test_type_3_signed_over_grpc_is_eth_accounts_and_mined(forked, door_factory):
    """The caller's way: sign the payload here, wrap it with the sidecar, submit."""
    fork, node = forked
    door = fresh_door(door_factory, node)
    car = sidecar([blob(1), blob(2)])
    tx = {"type": 3, "chainId": node.chain_id, "nonce": 0, "to": INBOX, "value": 0,
          "gas": 21000, "data": b"", "accessList": [], **fees(node),
          "blobVersionedHashes": list(car.versioned_hashes)}
    reply = door.grpc.stub.SignTransaction(
        pb.SignTransactionRequest(key_id="hot", transaction=to_proto(tx)), timeout=10)
    reference = Account.sign_transaction(dict(tx), door.key)
    assert bytes(reply.raw_transaction) == bytes(reference.raw_transaction)

    before = balance(node, door.address)
    raw = network_form(bytes(reply.raw_transaction), car, HARDFORKS[fork])
    tx_hash = result(node.url, "eth_sendRawTransaction", ["0x" + raw.hex()])
    assert tx_hash == "0x" + bytes(reply.transaction_hash).hex()
    receipt = node.receipt(tx_hash)
    assert receipt["status"] == "0x1" and receipt["type"] == "0x3"
    assert_paid_blob_gas(node, door.address, before, receipt, 2)


def test_eth_send_transaction_with_blobs_is_filled_wrapped_and_mined(forked, door_factory):
    _, node = forked
    door = fresh_door(door_factory, node)
    blobs = [blob(7)]
    blob_base_fee = int(result(node.url, "eth_blobBaseFee"), 16)
    before = balance(node, door.address)
    tx_hash = result(door.url, "eth_sendTransaction", [
        {"from": door.address, "to": INBOX, "blobs": ["0x" + b.hex() for b in blobs]}])
    receipt = node.receipt(tx_hash)
    assert receipt["status"] == "0x1" and receipt["type"] == "0x3"
    mined = result(node.url, "eth_getTransactionByHash", [tx_hash])
    assert mined["blobVersionedHashes"] == ["0x" + h.hex() for h in sidecar(blobs).versioned_hashes]
    assert int(mined["maxFeePerBlobGas"], 16) == 2 * blob_base_fee
    assert_paid_blob_gas(node, door.address, before, receipt, 1)


def test_eth_sign_transaction_strip_sign_reattach(forked, door_factory):
    """op-signer's client: strip the sidecar, eth_signTransaction the rest, reattach."""
    fork, node = forked
    door = fresh_door(door_factory, node)
    car = sidecar([blob(3)])
    given = fees(node)
    raw = result(door.url, "eth_signTransaction", [{
        "from": door.address, "to": INBOX, "nonce": "0x0", "gas": hex(21000), "value": "0x0",
        "chainId": hex(node.chain_id), "type": "0x3", "input": "0x",
        **{name: hex(value) for name, value in given.items()},
        "blobVersionedHashes": ["0x" + h.hex() for h in car.versioned_hashes]}])
    reference = Account.sign_transaction({
        "type": 3, "chainId": node.chain_id, "nonce": 0, "to": INBOX, "value": 0, "gas": 21000,
        "data": b"", "accessList": [], **given,
        "blobVersionedHashes": list(car.versioned_hashes)}, door.key)
    assert raw == "0x" + bytes(reference.raw_transaction).hex()
    wrapped = network_form(bytes.fromhex(raw[2:]), car, HARDFORKS[fork])
    tx_hash = result(node.url, "eth_sendRawTransaction", ["0x" + wrapped.hex()])
    assert tx_hash == "0x" + keccak(bytes.fromhex(raw[2:])).hex()
    assert node.receipt(tx_hash)["status"] == "0x1"


def _blob_tx(door: Door, **fields) -> dict:
    base = {"from": door.address, "to": INBOX, "nonce": "0x0", "gas": "0x5208",
            "chainId": "0x7a69", "maxFeePerGas": "0x77359400", "maxPriorityFeePerGas": "0x1",
            "maxFeePerBlobGas": "0x1", "blobVersionedHashes": ["0x01" + "00" * 31]}
    return {k: v for k, v in {**base, **fields}.items() if v is not None}


def _one_blob() -> str:
    return "0x" + blob(9).hex()


BAD_BLOBS = [
    ("eth_signTransaction", lambda d: _blob_tx(d, blobVersionedHashes=None),
     "blobVersionedHashes: required"),
    ("eth_signTransaction", lambda d: _blob_tx(d, blobVersionedHashes=["0x02" + "00" * 31]),
     "blobVersionedHashes[0]: version byte 0x02, expected 0x01"),
    ("eth_signTransaction", lambda d: _blob_tx(d, blobVersionedHashes=["0x01" + "00" * 31] * 10),
     "blobVersionedHashes: 10 blobs; a block holds at most 9"),
    ("eth_signTransaction", lambda d: _blob_tx(d, to=None),
     "to: type 3 (EIP-4844) transactions cannot create contracts"),
    ("eth_signTransaction", lambda d: _blob_tx(d, blobs=[_one_blob()]),
     "blobs: eth_signTransaction signs the payload only"),
    ("eth_sendTransaction", lambda d: _blob_tx(d, nonce=None),
     "blobs: required to send a blob transaction"),
    ("eth_sendTransaction", lambda d: _blob_tx(d, nonce=None, blobs=["0x00"]),
     f"blobs[0]: must be exactly {BYTES_PER_BLOB} bytes, got 1"),
    ("eth_sendTransaction", lambda d: _blob_tx(d, nonce=None, blobs=[_one_blob()]),
     "blobVersionedHashes[0]: 0x01" + "00" * 31 + " is not the versioned hash of blobs[0]"),
    ("eth_sendTransaction", lambda d: _blob_tx(d, nonce=None, blobs=[_one_blob()] * 2),
     "blobVersionedHashes: 1 hashes for 2 blobs"),
]


@pytest.mark.parametrize(("method", "params", "fragment"), BAD_BLOBS,
                         ids=[f"{m}-{f[:30]}" for m, _, f in BAD_BLOBS])
def test_bad_blob_input_gets_32602_naming_the_field(door: Door, anvil: Anvil, method, params,
                                                    fragment):
    reply = rpc(door.url, method, [params(door)])
    assert reply["error"]["code"] == -32602, reply
    assert reply["error"]["message"].startswith(fragment), reply
    assert anvil.pending_pool_empty()


# --- EIP-7702 ---------------------------------------------------------------------------------


def _recover(auth: dict) -> str:
    digest = authorization_digest(UnsignedAuthorization(
        int(auth["chainId"], 16), bytes.fromhex(auth["address"][2:]), int(auth["nonce"], 16)))
    signature = keys.Signature(vrs=(int(auth["yParity"], 16), int(auth["r"], 16),
                                    int(auth["s"], 16)))
    return signature.recover_public_key_from_msg_hash(digest).to_checksum_address()


def test_self_sponsored_delegation_signed_here_is_mined(forked, door_factory, tools: Tools):
    _, node = forked
    door = fresh_door(door_factory, node)
    # the sender's own nonce is spent by the transaction before the authorization is checked
    auth = result(door.url, "wallet_signAuthorization", [{
        "from": door.address, "chainId": hex(node.chain_id), "address": DELEGATE,
        "nonce": "0x1"}])
    reference = Account.sign_authorization(
        {"chainId": node.chain_id, "address": DELEGATE, "nonce": 1}, door.key)
    assert auth == {"chainId": hex(node.chain_id), "address": DELEGATE, "nonce": "0x1",
                    "yParity": hex(reference.y_parity), "r": hex(reference.r),
                    "s": hex(reference.s)}
    assert _recover(auth) == door.address
    viem = run_node(tools, "authorization.mjs", door.address, json.dumps(auth))
    assert viem == {"valid": True, "recovered": door.address}

    tx_hash = result(door.url, "eth_sendTransaction", [
        {"from": door.address, "to": door.address, "authorizationList": [auth]}])
    receipt = node.receipt(tx_hash)
    assert receipt["status"] == "0x1" and receipt["type"] == "0x4"
    assert result(node.url, "eth_getCode", [door.address, "latest"]) == (
        "0xef0100" + DELEGATE[2:].lower())


def test_sponsored_delegation_signed_over_grpc_is_mined(forked, door_factory, tools: Tools):
    """The key signs only the authorization (gRPC); another account sends and pays for it."""
    _, node = forked
    authority, sponsor = fresh_door(door_factory, node), fresh_door(door_factory, node)
    signed = authority.grpc.stub.SignAuthorization(pb.SignAuthorizationRequest(
        key_id="hot", chain_id=node.chain_id, address=DELEGATE, nonce=0), timeout=10)
    a = signed.authorization
    auth = {"chainId": hex(a.chain_id), "address": a.address, "nonce": hex(a.nonce),
            "yParity": hex(a.y_parity), "r": hex(int.from_bytes(a.r, "big")),
            "s": hex(int.from_bytes(a.s, "big"))}
    assert _recover(auth) == authority.address
    assert run_node(tools, "authorization.mjs", authority.address, json.dumps(auth))["valid"]
    before = balance(node, authority.address)
    tx_hash = result(sponsor.url, "eth_sendTransaction", [
        {"from": sponsor.address, "to": authority.address, "authorizationList": [auth]}])
    assert node.receipt(tx_hash)["status"] == "0x1"
    assert result(node.url, "eth_getCode", [authority.address, "latest"]) == (
        "0xef0100" + DELEGATE[2:].lower())
    assert balance(node, authority.address) == before  # the sponsor paid


def test_wallet_sign_authorization_fills_the_nonce_from_the_node(door: Door, anvil: Anvil):
    for _ in range(2):
        result(door.url, "eth_sendTransaction", [{"from": door.address, "to": INBOX}])
    auth = result(door.url, "wallet_signAuthorization", [
        {"from": door.address, "chainId": hex(anvil.chain_id), "address": DELEGATE}])
    assert auth["nonce"] == "0x2" and _recover(auth) == door.address


@pytest.mark.parametrize(("params", "fragment"), [
    ([{"chainId": "0x1", "address": DELEGATE}], "from: required"),
    ([{"from": None, "chainId": "0x1", "address": DELEGATE}], "from: required"),
    ([{"from": "@", "address": DELEGATE}], "chainId: required (\"0x0\" signs for every chain)"),
    ([{"from": "@", "chainId": "0x1"}], "address: required"),
    ([{"from": "@", "chainId": "0x1", "address": "0x12"}], "address: expected a 0x-prefixed"),
    ([{"from": "@", "chainId": "0x1", "address": DELEGATE, "nonce": "0x" + "f" * 16}],
     "nonce: 18446744073709551615 exceeds 2**64-2"),
    ([{"from": "@", "chainId": "0x1", "address": DELEGATE, "yParity": "0x0"}],
     "yParity: not a field of wallet_signAuthorization"),
    (["0x12"], "authorization: expected an object"),
    ([], "params: wallet_signAuthorization takes 1 parameters, got 0"),
])
def test_bad_authorization_requests_get_32602(door: Door, params, fragment):
    params = [{k: door.address if v == "@" else v for k, v in p.items()}
              if isinstance(p, dict) else p for p in params]
    reply = rpc(door.url, "wallet_signAuthorization", params)
    assert reply["error"]["code"] == -32602, reply
    assert reply["error"]["message"].startswith(fragment), reply


def test_without_an_upstream_the_nonce_is_required(door_factory):
    door = door_factory(upstream=None, fund=False)
    reply = rpc(door.url, "wallet_signAuthorization", [
        {"from": door.address, "chainId": "0x1", "address": DELEGATE}])
    assert reply["error"] == {"code": -32602, "message": "nonce: required (no upstream node is "
                                                         "configured to read it from)"}


def test_a_frozen_key_signs_no_authorization(door: Door):
    door.app.store.freeze("hot", "incident 7", "2026-01-01T00:00:00Z")
    door.app.freeze = type(door.app.freeze)(door.app.store)
    reply = rpc(door.url, "wallet_signAuthorization", [
        {"from": door.address, "chainId": "0x1", "address": DELEGATE, "nonce": "0x0"}])
    assert reply["error"]["code"] == -32000
    assert "frozen: incident 7" in reply["error"]["message"]


# --- policy over JSON-RPC ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent_certificate(tmp_path_factory) -> bytes:
    ca = CertificateAuthority(tmp_path_factory.mktemp("pki"))
    return ca.issue("agent", uris=("spiffe://test/agent",)).cert_pem


KEY = "0x" + "07" * 32
ADDRESS = Account.from_key(KEY).address


def policy_dispatcher(methods: list[str]) -> Dispatcher:
    policy = PolicyConfig.model_validate({
        "chains": [1], "max_gas_fee_wei": str(10**18),
        "allow": [{"id": "inbox", "to": INBOX},
                  {"id": "wallet", "kind": "authorization", "delegates": [DELEGATE]}]})
    clients = {"agent": ClientConfig(identity="spiffe://test/agent", keys=["hot"],
                                     methods=methods, policy="agent")}
    app = open_app(KeyRing([env_wallet(KEY, "hot")]), clients=clients,
                   policies={"agent": policy})
    return Dispatcher(app, app.store, None, 10)


def call(dispatcher: Dispatcher, certificate: bytes, method: str, params: list) -> dict:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    answer = dispatcher.handle(body, Caller("ipv4:127.0.0.1:1", "r1", certificate))
    assert answer.body is not None
    reply: dict = json.loads(answer.body)
    return reply


@pytest.mark.parametrize(("request_", "message"), [
    ({"chainId": "0x1", "address": "0x" + "11" * 20},
     "policy agent: no allow rule matches: delegate 0x1111111111111111111111111111111111111111 "
     f"not in [{DELEGATE}] (rule wallet)"),
    ({"chainId": "0x0", "address": DELEGATE},
     "policy agent: no allow rule matches: chain_id 0 (valid on every chain) needs "
     "allow_any_chain = true (rule wallet)"),
])
def test_the_policy_refuses_authorizations_with_32003(agent_certificate, request_, message):
    dispatcher = policy_dispatcher(["SignTransaction", "SignAuthorization"])
    reply = call(dispatcher, agent_certificate, "wallet_signAuthorization",
                 [{"from": ADDRESS, "nonce": "0x0", **request_}])
    assert reply["error"] == {"code": -32003, "message": message}
    allowed = call(dispatcher, agent_certificate, "wallet_signAuthorization",
                   [{"from": ADDRESS, "nonce": "0x0", "chainId": "0x1", "address": DELEGATE}])
    assert _recover(allowed["result"]) == ADDRESS


def test_a_client_without_the_method_or_a_blob_rule_is_refused(agent_certificate):
    dispatcher = policy_dispatcher(["SignTransaction"])
    reply = call(dispatcher, agent_certificate, "wallet_signAuthorization",
                 [{"from": ADDRESS, "nonce": "0x0", "chainId": "0x1", "address": DELEGATE}])
    assert reply["error"] == {"code": -32000, "message": "client 'agent' may not call "
                                                         "SignAuthorization (key 'hot')"}
    blob_tx = {"from": ADDRESS, "to": INBOX, "nonce": "0x0", "gas": "0x5208", "chainId": "0x1",
               "maxFeePerGas": "0x2", "maxPriorityFeePerGas": "0x1", "maxFeePerBlobGas": "0x1",
               "blobVersionedHashes": ["0x01" + "00" * 31]}
    reply = call(dispatcher, agent_certificate, "eth_signTransaction", [blob_tx])
    assert reply["error"] == {"code": -32003, "message": "policy agent: no allow rule matches: "
                                                         "1 blobs exceed blobs_max 0 (rule inbox)"}
