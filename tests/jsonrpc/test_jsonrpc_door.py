"""The JSON-RPC door against a real node (anvil): the same bytes as the gRPC route, EIP-1474
errors for every kind of bad request, batches, limits, and an upstream that fails."""

import http.client
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from eth_account import Account

from signer.v1 import signer_pb2 as pb
from tests.jsonrpc.conftest import Anvil, Door, free_port, post, result, rpc

TO = "0x" + "42" * 20
GWEI = 10**9


def signed_authorization(chain_id: int) -> dict[str, Any]:
    auth = Account.create().sign_authorization(
        {"chainId": chain_id, "address": "0x" + "33" * 20, "nonce": 7})
    return {"chainId": hex(auth.chain_id), "address": "0x" + "33" * 20, "nonce": hex(auth.nonce),
            "yParity": hex(auth.y_parity), "r": hex(auth.r), "s": hex(auth.s)}


def test_types_0_1_2_4_are_byte_identical_to_the_grpc_route(door: Door):
    auth = signed_authorization(31337)
    access = [{"address": "0x" + "44" * 20, "storageKeys": ["0x" + "01" * 32]}]
    common = {"from": door.address, "to": TO, "value": "0x2a", "nonce": "0x5", "gas": "0x15f90",
              "chainId": "0x7a69", "input": "0xdeadbeef"}
    cases = {
        0: {"gasPrice": hex(3 * GWEI)},
        1: {"type": "0x1", "gasPrice": hex(3 * GWEI), "accessList": access},
        2: {"maxFeePerGas": hex(3 * GWEI), "maxPriorityFeePerGas": hex(GWEI),
            "accessList": access},
        4: {"type": "0x4", "maxFeePerGas": hex(3 * GWEI), "maxPriorityFeePerGas": hex(GWEI),
            "authorizationList": [auth]},
    }
    for tx_type, fields in cases.items():
        raw = result(door.url, "eth_signTransaction", [{**common, **fields}])
        grpc_tx = pb.Transaction(
            type=tx_type, chain_id=31337, nonce=5, to=TO, value="42", gas_limit=90000,
            data=bytes.fromhex("deadbeef"),
            gas_price=str(3 * GWEI) if tx_type < 2 else "",
            max_fee_per_gas=str(3 * GWEI) if tx_type >= 2 else "",
            max_priority_fee_per_gas=str(GWEI) if tx_type >= 2 else "",
        )
        if tx_type in (1, 2):
            grpc_tx.access_list.add(address=access[0]["address"], storage_keys=[b"\x01" * 32])
        if tx_type == 4:
            grpc_tx.authorization_list.add(
                chain_id=31337, address=auth["address"], nonce=7,
                y_parity=int(auth["yParity"], 16), r=int(auth["r"], 16).to_bytes(32, "big"),
                s=int(auth["s"], 16).to_bytes(32, "big"))
        via_grpc = door.grpc.stub.SignTransaction(
            pb.SignTransactionRequest(key_id="hot", transaction=grpc_tx))
        assert bytes.fromhex(raw[2:]) == via_grpc.raw_transaction, tx_type
        assert Account.recover_transaction(raw) == door.address
        assert int(raw[2:4], 16) == tx_type if tx_type else int(raw[2:4], 16) >= 0xC0


def test_messages_and_typed_data_match_eth_account(door: Door):
    from eth_account.messages import encode_defunct, encode_typed_data

    sig = result(door.url, "personal_sign", ["0x68656c6c6f", door.address.lower()])
    assert sig == "0x" + bytes(Account.sign_message(encode_defunct(b"hello"), door.key).signature).hex()
    assert result(door.url, "eth_sign", [door.address, "0x68656c6c6f"]) == sig
    typed = {"types": {"EIP712Domain": [{"name": "name", "type": "string"}],
                       "M": [{"name": "x", "type": "uint256"}]},
             "primaryType": "M", "domain": {"name": "t"}, "message": {"x": 5}}
    expected = "0x" + bytes(Account.sign_message(encode_typed_data(full_message=typed),
                                                 door.key).signature).hex()
    assert result(door.url, "eth_signTypedData_v4", [door.address, typed]) == expected
    assert result(door.url, "eth_signTypedData", [door.address, json.dumps(typed)]) == expected


def tx(door: Door, **fields: Any) -> dict[str, Any]:
    return {"from": door.address, "to": TO, "value": "0x1", "nonce": "0x0", "gas": "0x5208",
            "chainId": "0x7a69", "maxFeePerGas": "0x2", "maxPriorityFeePerGas": "0x1", **fields}


NEGATIVE = [
    # (method, params(door), code, message fragment)
    ("eth_signTransaction", lambda d: [tx(d, **{"from": "0x" + "22" * 20})], -32000,
     "no key for 0x2222222222222222222222222222222222222222 is available to this client"),
    ("eth_sendTransaction", lambda d: [{"from": "0x" + "22" * 20, "to": TO}], -32000, "no key for"),
    ("personal_sign", lambda d: ["0x00", "0x" + "22" * 20], -32000, "no key for"),
    ("eth_signTransaction", lambda d: [tx(d, value="0xZZ")], -32602, "value: expected \"0x\""),
    ("eth_signTransaction", lambda d: [tx(d, value="0x" + "f" * 65)], -32602,
     "value: does not fit in 256 bits"),
    ("eth_signTransaction", lambda d: [tx(d, input="0x01", data="0x02")], -32602,
     "input: differs from data"),
    ("eth_sendTransaction", lambda d: [{"from": d.address, "to": TO, "chainId": "0x1"}], -32602,
     "chainId: 0x1 is not the upstream node's chain id 0x7a69"),
    ("eth_signTransaction", lambda d: [tx(d, chainId="0x1", nonce=None)], -32602,
     "nonce: required for eth_signTransaction"),
    ("eth_signTransaction", lambda d: [tx(d, gasPrice="0x1")], -32602,
     "gasPrice: not a field of type 2"),
    ("eth_signTransaction", lambda d: [tx(d, blobVersionedHashes=[])], -32602, "blob"),
    ("eth_signTransaction", lambda d: ["0x12"], -32602, "tx: expected a transaction object"),
    ("eth_signTransaction", lambda d: [], -32602, "params: eth_signTransaction takes 1"),
    ("personal_sign", lambda d: ["hello", d.address], -32602, "data: expected \"0x\""),
    ("eth_sign", lambda d: ["0x1234", "0x00"], -32602, "address: expected a 0x-prefixed"),
    ("eth_signTypedData_v4", lambda d: [d.address, {"types": {}}], -32602,
     "typed_data_json: missing primaryType"),
    ("eth_accounts", lambda d: {"a": 1}, -32602, "positional params"),
]


@pytest.mark.parametrize(("method", "params", "code", "fragment"), NEGATIVE,
                         ids=[f"{m}-{i}" for i, (m, *_) in enumerate(NEGATIVE)])
def test_bad_requests_get_eip1474_errors_naming_the_field(door: Door, anvil: Anvil, method,
                                                         params, code, fragment):
    reply = rpc(door.url, method, params(door))
    assert reply["id"] == 1 and reply["error"]["code"] == code, reply
    assert fragment in reply["error"]["message"]
    assert "Traceback" not in json.dumps(reply) and door.key[2:] not in json.dumps(reply)
    assert anvil.pending_pool_empty()


def test_framing_errors(door: Door):
    assert post(door.url, b"{not json")[1]["error"]["code"] == -32700
    assert post(door.url, b'{"a":1,"a":2}')[1]["error"]["code"] == -32700
    assert post(door.url, b"[" * 100 + b"]" * 100)[1]["error"]["code"] == -32700
    assert post(door.url, b'{"id":1,"method":"eth_accounts"}')[1]["error"]["code"] == -32600
    assert post(door.url, b'{"jsonrpc":"2.0","id":1}')[1]["error"] == {
        "code": -32600, "message": "invalid request: method must be a string"}
    status, reply = post(door.url, b"[]")
    assert status == 200 and reply["error"]["code"] == -32600 and reply["id"] is None


def test_a_batch_answers_each_request_on_its_own(door: Door, anvil: Anvil):
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_accounts"},
        {"jsonrpc": "2.0", "id": "two", "method": "eth_signTransaction",
         "params": [tx(door, value="0x01")]},
        {"jsonrpc": "2.0", "method": "health_status"},  # a notification: no answer
        {"jsonrpc": "2.0", "id": 4, "method": "eth_blockNumber"},  # forwarded
        {"jsonrpc": "2.0", "id": 5, "method": "eth_signTransaction", "params": [tx(door)]},
        42,
    ]
    status, replies = post(door.url, json.dumps(batch).encode())
    assert status == 200 and len(replies) == 5
    by_id = {r["id"]: r for r in replies}
    assert by_id[1]["result"] == [door.address]
    assert by_id["two"]["error"]["code"] == -32602
    assert by_id[4]["result"] == result(anvil.url, "eth_blockNumber")
    assert Account.recover_transaction(by_id[5]["result"]) == door.address
    assert by_id[None]["error"]["code"] == -32600


def test_notifications_only_get_no_body(door: Door):
    status, body = post(door.url, b'{"jsonrpc":"2.0","method":"health_status"}')
    assert status == 204 and body is None


def test_passthrough_relays_the_nodes_answer(door: Door, anvil: Anvil):
    assert rpc(door.url, "eth_blockNumber") == rpc(anvil.url, "eth_blockNumber")
    assert rpc(door.url, "eth_getBalance", [door.address, "latest"]) == rpc(
        anvil.url, "eth_getBalance", [door.address, "latest"])
    # only the allowlist reaches the node: anything else is not found here
    assert rpc(door.url, "anvil_setBalance", [door.address, "0x0"])["error"]["code"] == -32601
    assert rpc(door.url, "no_suchMethod")["error"]["code"] == -32601


def test_without_upstream_other_methods_are_not_found(door_factory):
    door = door_factory(upstream=None, fund=False)
    assert rpc(door.url, "eth_blockNumber")["error"]["code"] == -32601
    assert rpc(door.url, "eth_sendTransaction", [{"from": door.address}])["error"]["code"] == -32601
    assert rpc(door.url, "eth_signTransaction", [tx(door)])["result"].startswith("0x02")
    assert rpc(door.url, "eth_signTransaction", [tx(door, chainId=None)])["error"] == {
        "code": -32602, "message": "chainId: required"}


def test_limits_body_size_and_batch_size(door_factory):
    door = door_factory(max_request_bytes=2048, max_batch_size=3, fund=False)
    status, reply = post(door.url, b" " * 4096)
    assert status == 413 and reply["error"]["code"] == -32600
    assert "exceeds max_request_bytes (2048)" in reply["error"]["message"]
    batch = [{"jsonrpc": "2.0", "id": i, "method": "health_status"} for i in range(4)]
    status, reply = post(door.url, json.dumps(batch).encode())
    assert reply["error"]["code"] == -32600 and "max_batch_size 3" in reply["error"]["message"]
    assert result(door.url, "health_status") == "OK"  # still serving


def test_keep_alive_and_healthz(door: Door):
    connection = http.client.HTTPConnection("127.0.0.1", door.listener.port, timeout=10)
    for _ in range(3):
        connection.request("POST", "/", b'{"jsonrpc":"2.0","id":1,"method":"health_status"}',
                           {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert json.loads(response.read())["result"] == "OK"
        assert response.getheader("x-request-id")
    socket_before = connection.sock
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    assert response.status == 200 and response.read() == b"OK\n"
    assert connection.sock is socket_before  # one TCP connection for all of it
    connection.close()


def test_upstream_down_is_resource_unavailable(door_factory):
    door = door_factory(upstream=f"http://127.0.0.1:{free_port()}", fund=False)
    for method, params in (("eth_blockNumber", []),
                           ("eth_sendTransaction", [{"from": door.address, "to": TO}])):
        reply = rpc(door.url, method, params)
        assert reply["error"]["code"] == -32002, reply
        assert "upstream node unavailable" in reply["error"]["message"]


class _FaultyNode(BaseHTTPRequestHandler):
    """A fault injector in front of the real anvil: every request passes through unless
    `fault(request)` says otherwise ("cut": the connection drops, the node never sees it; a
    dict: answered with that result instead of the node's)."""

    protocol_version = "HTTP/1.1"
    upstream = ""
    fault: Any = staticmethod(lambda request: None)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = json.loads(body)
        injected = type(self).fault(request)
        if injected == "cut":
            self.close_connection = True
            self.connection.close()
            return
        status, reply = post(self.upstream, body)
        if injected is not None:
            reply = {"jsonrpc": "2.0", "id": request["id"], "result": injected["result"]}
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def faulty_node(anvil: Anvil):
    """faulty_node(fault) -> URL of a proxy to anvil that injects `fault`."""
    proxies = []

    def start(fault: Any) -> str:
        handler = type("Faulty", (_FaultyNode,), {"upstream": anvil.url,
                                                  "fault": staticmethod(fault)})
        proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        proxies.append(proxy)
        return f"http://127.0.0.1:{proxy.server_address[1]}"

    yield start
    for proxy in proxies:
        proxy.shutdown()
        proxy.server_close()


def test_a_failed_submission_after_signing_is_in_the_audit_and_frees_the_nonce(
        door_factory, faulty_node, anvil: Anvil):
    node = faulty_node(lambda r: "cut" if r["method"] == "eth_sendRawTransaction" else None)
    door = door_factory(upstream=node)
    reply = rpc(door.url, "eth_sendTransaction", [{"from": door.address, "to": TO}])
    assert reply["error"]["code"] == -32002
    tx_hash = reply["error"]["message"].split("transaction ")[1].split()[0]
    assert "was signed but not submitted" in reply["error"]["message"]
    outcomes = [json.loads(row.body) for row in door.app.store.recent_audit(50)]
    signed = [r for r in outcomes if r.get("kind") == "outcome" and r.get("result") == tx_hash]
    assert len(signed) == 1 and signed[0]["status"] == "OK"  # the signature exists
    assert signed[0]["jsonrpc_method"] == "eth_sendTransaction"
    assert anvil.pending_pool_empty()
    # the nonce was given back: the next reservation hands out 0 again
    assert door.app.store.next_nonce(31337, bytes.fromhex(door.address[2:]), 0) == 0


def test_nonce_too_low_from_the_node_resyncs_and_retries(door_factory, faulty_node,
                                                         anvil: Anvil, caplog):
    caplog.set_level(logging.INFO, logger="signer.jsonrpc.sending")
    stale = {"left": 1}

    def stale_pending_count(request: dict[str, Any]) -> Any:
        # a lagging node answers the pending count once with 0
        if request["method"] == "eth_getTransactionCount" and stale["left"]:
            stale["left"] -= 1
            return {"result": "0x0"}
        return None

    door = door_factory(upstream=faulty_node(stale_pending_count))
    # nonce 0 is used outside the signer's counter (a client-chosen nonce, sent directly)
    raw = result(door.url, "eth_signTransaction", [{**tx(door), "maxFeePerGas": hex(10**10)}])
    anvil.receipt(result(anvil.url, "eth_sendRawTransaction", [raw]))
    tx_hash = result(door.url, "eth_sendTransaction", [{"from": door.address, "to": TO}])
    assert anvil.receipt(tx_hash)["status"] == "0x1"
    assert result(anvil.url, "eth_getTransactionByHash", [tx_hash])["nonce"] == "0x1"
    assert stale["left"] == 0
    assert f"nonce 0 of {door.address} too low for the node: re-syncing" in caplog.text


def test_op_stack_signer_client_request_shape(door: Door, anvil: Anvil):
    """What op-batcher/op-proposer (op-service/signer TransactionArgs) send: nulls for unset
    fields, `input` plus `data: null`, an empty access list, hex chain id; raw hex back."""
    args = {"from": door.address, "to": TO, "gas": "0x5208", "gasPrice": None,
            "maxFeePerGas": hex(10**10), "maxPriorityFeePerGas": hex(10**9), "value": "0x3",
            "nonce": "0x0", "data": None, "input": "0x", "accessList": [], "chainId": "0x7a69"}
    assert result(door.url, "health_status") == "OK"
    raw = result(door.url, "eth_signTransaction", [args])
    assert Account.recover_transaction(raw) == door.address and raw.startswith("0x02")
    receipt = anvil.receipt(result(anvil.url, "eth_sendRawTransaction", [raw]))
    assert receipt["status"] == "0x1"


def test_every_type_is_filled_sent_and_mined(door: Door, anvil: Anvil):
    """eth_sendTransaction and viem's wallet_sendTransaction, with the type chosen, inferred or
    left to the node's fee market; the type 4 authorization is signed by another account."""
    delegator = Account.create()
    auth = delegator.sign_authorization({"chainId": 31337, "address": "0x" + "33" * 20,
                                         "nonce": 0})
    authorization = {"chainId": hex(auth.chain_id), "address": "0x" + "33" * 20, "nonce": "0x0",
                     "yParity": hex(auth.y_parity), "r": hex(auth.r), "s": hex(auth.s)}
    access = [{"address": "0x" + "44" * 20, "storageKeys": []}]
    cases = [
        ("eth_sendTransaction", {"type": "0x0"}, 0),
        ("eth_sendTransaction", {"gasPrice": hex(3 * GWEI), "accessList": access}, 1),
        ("wallet_sendTransaction", {"accessList": access}, 2),
        ("eth_sendTransaction", {"type": "0x4", "authorizationList": [authorization]}, 4),
    ]
    for method, fields, expected_type in cases:
        tx_hash = result(door.url, method, [{"from": door.address, "to": TO, **fields}])
        assert anvil.receipt(tx_hash)["status"] == "0x1", (method, fields)
        mined = result(anvil.url, "eth_getTransactionByHash", [tx_hash])
        assert int(mined["type"], 16) == expected_type
    code = result(anvil.url, "eth_getCode", [delegator.address, "latest"])
    assert code == "0xef0100" + "33" * 20  # the EIP-7702 delegation took effect
    assert result(door.url, "eth_requestAccounts") == [door.address]
