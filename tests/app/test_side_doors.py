"""Side doors found by trying the service as an attacker would, each reproduced against a real
`wallet-signer serve` subprocess (real gRPC over HTTP/2, real HTTP for the JSON-RPC door, a
stand-in upstream node on loopback). Each test failed on the code before its fix.

A deadline on the call stands in for "the server froze": the fixed server answers in
milliseconds, the old one took from seconds to minutes (measured figures in each test).
"""

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import pytest

from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc
from tests.support.serve_process import ServeProcess, env_key_config, jsonrpc_url, start_serve
from tests.support.stub_node import StubNode

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _config(tmp_path: Path, extra: str = "") -> Path:
    return env_key_config(tmp_path, extra)


@pytest.fixture
def served(tmp_path: Path, env_key: str) -> Iterator[tuple[ServeProcess, str]]:
    running = start_serve(tmp_path, _config(tmp_path), {"HOT_WALLET_KEY": env_key})
    yield running, jsonrpc_url(running)
    running.proc.kill()
    running.proc.wait(10)


def _stub(running: ServeProcess) -> pb_grpc.SignerServiceStub:
    return pb_grpc.SignerServiceStub(grpc.insecure_channel(running.target))


def _post(url: str, body: bytes, timeout: float = 10) -> Any:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read())


def _still_serving(running: ServeProcess) -> None:
    reply = _stub(running).GetAddress(pb.GetAddressRequest(key_id="hot"), timeout=5)
    assert reply.address.startswith("0x")


# -- one request froze the whole server (quadratic JSON string scan) --------------------------

def test_unterminated_escaped_quotes_in_typed_data_are_refused_at_once(served):
    # old: 64 KB took 18.2 s of CPU holding the GIL (both doors and health stopped)
    running, _ = served
    text = '{"a":"' + '\\"' * 32_000
    with pytest.raises(grpc.RpcError) as caught:
        _stub(running).SignTypedData(
            pb.SignTypedDataRequest(key_id="hot", typed_data_json=text), timeout=3)
    assert caught.value.code() == INVALID
    assert caught.value.details().startswith("typed_data_json: not valid JSON")
    _still_serving(running)


def test_unterminated_escaped_quotes_in_a_jsonrpc_body_are_refused_at_once(served):
    # old: a 32 KB body took 4.3 s; this one (200 KB) about 3 minutes
    running, url = served
    body = b'{"jsonrpc":"2.0","id":1,"method":"eth_accounts","params":["' + b'\\"' * 100_000
    reply = _post(url, body, timeout=3)
    assert reply["error"]["code"] == -32700
    _still_serving(running)


# -- input reported as an outage (integer-conversion limit, lone surrogates) -------------------

BIG = "1" * 4400

TYPES = {"EIP712Domain": [{"name": "name", "type": "string"}],
         "Mail": [{"name": "amount", "type": "uint256"}]}


def _typed(**parts: Any) -> str:
    data = {"types": TYPES, "primaryType": "Mail", "domain": {"name": "x"},
            "message": {"amount": 1}}
    data.update(parts)
    return json.dumps(data)


HUGE_INTEGERS = [
    _typed().replace('"amount": 1', f'"amount": {BIG}'),  # in message
    _typed().replace('"name": "x"', f'"name": "x", "chainId": {BIG}'),  # in domain
    _typed().replace('"type": "uint256"', f'"type": "uint256", "x": {BIG}'),  # a value in types
    _typed(types={**TYPES, "Mail": [{"name": "amount", "type": f"uint256[{BIG}]"}]}),
]


@pytest.mark.parametrize("text", HUGE_INTEGERS, ids=["message", "domain", "types", "array"])
def test_integers_past_the_conversion_limit_are_invalid_input_not_a_fault(served, text):
    running, url = served
    stub = _stub(running)
    for call in (
        lambda: stub.SignTypedData(pb.SignTypedDataRequest(key_id="hot", typed_data_json=text),
                                   timeout=5),
        lambda: stub.EvaluatePolicy(pb.EvaluatePolicyRequest(
            typed_data=pb.SignTypedDataRequest(key_id="hot", typed_data_json=text)),
            timeout=5),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == INVALID, caught.value.details()
        assert caught.value.details().startswith("typed_data_json: ")
    address = stub.GetAddress(pb.GetAddressRequest(key_id="hot"), timeout=5).address
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_signTypedData_v4", "params": [address, text]}
    reply = _post(url, json.dumps(body).encode())
    assert reply["error"]["code"] == -32602, reply
    assert "Traceback" not in running.log() and "signer fault" not in running.log()


SURROGATES = [
    _typed(domain={"\ud800": 1}),
    _typed(types={**TYPES, "Mail": [{"name": "\ud800", "type": "uint256"}]}),
    _typed(message={"amount": "\udc00"}),
]


@pytest.mark.parametrize("text", SURROGATES, ids=["domain-key", "field-name", "value"])
def test_lone_surrogates_are_invalid_input_with_a_clean_message(served, text):
    running, _ = served
    assert "\\ud" in text or "\\udc00" in text  # json.dumps escaped it: what a client sends
    with pytest.raises(grpc.RpcError) as caught:
        _stub(running).SignTypedData(
            pb.SignTypedDataRequest(key_id="hot", typed_data_json=text), timeout=5)
    assert caught.value.code() == INVALID
    assert "lone UTF-16 surrogate" in caught.value.details()
    assert "Exception calling application" not in caught.value.details()
    assert "Traceback" not in running.log()


# -- signed, audited and never delivered (non-ASCII x-request-id over raw HTTP/2) ------------

def _h2_call(target: str, path: str, message: bytes, request_id: bytes) -> dict[bytes, bytes]:
    """One unary gRPC call by hand over HTTP/2 (h2c), with an x-request-id of raw bytes that
    grpcio's own client refuses to send. Returns the response headers and trailers."""
    host, port = target.rsplit(":", 1)
    config = h2.config.H2Configuration(client_side=True, header_encoding=None)
    connection = h2.connection.H2Connection(config)
    seen: dict[bytes, bytes] = {}
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        connection.send_headers(stream, [
            (b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode()),
            (b":authority", target.encode()), (b"content-type", b"application/grpc"),
            (b"te", b"trailers"), (b"x-request-id", request_id),
        ])
        connection.send_data(stream, b"\0" + len(message).to_bytes(4, "big") + message,
                             end_stream=True)
        sock.sendall(connection.data_to_send())
        for _ in range(1000):  # bounded: a reply is a handful of frames
            data = sock.recv(65536)
            if not data:
                break
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    seen.update(event.headers)
                if isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    return seen
            sock.sendall(connection.data_to_send())
    return seen


@pytest.mark.parametrize("raw", [b"\xc3\xa9", b"\xe6\x97\xa5", b"\xff"])
def test_a_non_ascii_request_id_does_not_lose_a_signed_answer(served, raw):
    running, _ = served
    request = pb.SignMessageRequest(key_id="hot", message=b"hello").SerializeToString()
    answer = _h2_call(running.target, "/signer.v1.SignerService/SignMessage", request, raw)
    assert answer.get(b"grpc-status") == b"0", answer  # old: 13 "Invalid metadata"
    echoed = answer[b"x-request-id"]
    assert echoed != raw and re.fullmatch(rb"[0-9a-f]{32}", echoed)  # a fresh id instead


# -- not JSON: an id of 1e400 was answered as Infinity ---------------------------------------

@pytest.mark.parametrize("number", ["1e400", "-1e400"])
def test_a_number_past_double_range_is_an_invalid_request(served, number):
    _, url = served
    body = f'{{"jsonrpc":"2.0","id":{number},"method":"eth_accounts","params":[]}}'.encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        text = reply.read().decode()
    assert "Infinity" not in text
    answer = json.loads(text)
    assert answer["error"]["code"] == -32600 and number in answer["error"]["message"]


# -- caller text is bounded before it is recorded ---------------------------------------------

def test_a_huge_key_id_does_not_become_a_huge_audit_record(served, tmp_path):
    running, _ = served
    stub = _stub(running)
    for _ in range(5):
        with pytest.raises(grpc.RpcError) as caught:
            stub.SignMessage(pb.SignMessageRequest(key_id="k" * 250_000, message=b"m"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with sqlite3.connect(tmp_path / "state.db") as db:
        longest = db.execute("SELECT max(length(body)) FROM audit_log").fetchone()[0]
    assert longest < 2_000  # old: 500,000+ characters a record


# -- freeze is enforced right before the backend signs ---------------------------------------

class _SlowNode(StubNode):
    """A stand-in node that holds eth_estimateGas until released."""

    def __init__(self) -> None:
        self.estimating = threading.Event()
        self.release = threading.Event()
        super().__init__()

    def answer(self, method: str) -> Any:
        if method == "eth_estimateGas":
            self.estimating.set()
            assert self.release.wait(20)
        return super().answer(method)


def test_a_freeze_issued_while_a_send_waits_on_the_node_stops_the_signature(tmp_path, env_key):
    node = _SlowNode()
    config = _config(tmp_path, f'upstream = "{node.url}"\n')
    running = start_serve(tmp_path, config, {"HOT_WALLET_KEY": env_key})
    try:
        url = jsonrpc_url(running)
        address = _stub(running).GetAddress(pb.GetAddressRequest(key_id="hot"), timeout=5).address
        replies: list[Any] = []
        send = {"jsonrpc": "2.0", "id": 7, "method": "eth_sendTransaction",
                "params": [{"from": address, "to": "0x" + "42" * 20, "value": "0x1"}]}
        sender = threading.Thread(
            target=lambda: replies.append(_post(url, json.dumps(send).encode(), timeout=30)))
        sender.start()
        assert node.estimating.wait(10)
        subprocess.run(
            [sys.executable, "-m", "signer.cli", "keys", "freeze", "hot", "--reason", "incident 7",
             "--config", str(config)],
            cwd=tmp_path, check=True, capture_output=True, timeout=60,
            env={**os.environ, "HOT_WALLET_KEY": env_key},
        )
        threading.Event().wait(0.7)  # past the freeze's freshness (0.5 s) on the serving side
        node.release.set()
        sender.join(30)
        assert replies and replies[0]["error"]["code"] == -32000, replies
        assert "frozen: incident 7" in replies[0]["error"]["message"]
        assert "eth_sendRawTransaction" not in node.methods  # old: signed and sent
    finally:
        node.release.set()
        node.close()
        running.proc.kill()
        running.proc.wait(10)


# -- secrets in URLs -----------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "postgresql://signer@db/signer?password=hunter2",
    "postgresql://signer@db/signer?sslmode=require&PassWord=hunter2",
    "postgresql://signer@db/signer?sslpassword=hunter2",
    "postgresql://signer:hunter2@db/signer",
])
def test_a_password_in_the_store_url_is_refused_and_never_printed(tmp_path, url):
    config = tmp_path / "signer.toml"
    config.write_text(f'[store]\nurl = "{url}"\n[keys.hot]\nbackend = "env"\n'
                      'private_key_env = "HOT_WALLET_KEY"\n')
    done = subprocess.run(
        [sys.executable, "-m", "signer.cli", "serve", "--config", str(config)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "HOT_WALLET_KEY": "0x" + "46" * 32},
    )
    assert done.returncode != 0
    assert "no password in the URL" in done.stderr + done.stdout
    assert "hunter2" not in done.stderr + done.stdout


def test_the_upstream_url_is_logged_without_its_path(tmp_path, env_key):
    config = _config(tmp_path, 'upstream = "http://127.0.0.1:9/v3/sEcReTaPiKeY"\n')
    running = start_serve(tmp_path, config, {"HOT_WALLET_KEY": env_key})
    try:
        assert "upstream http://127.0.0.1:9/..." in running.log()
        assert "sEcReTaPiKeY" not in running.log()
    finally:
        running.proc.kill()
        running.proc.wait(10)
