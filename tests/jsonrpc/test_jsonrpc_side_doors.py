"""The side doors around the JSON-RPC door (issue 16, "Access" and "The JSON-RPC door"), each
tried as an attacker would against a real `wallet-signer serve` subprocess: real TLS with
certificates made here, real HTTP over raw sockets, a stand-in upstream node on loopback that
records what reaches it. Each test failed on the code before its fix (noted per test).
"""

import json
import re
import signal
import socket
import sqlite3
import ssl
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from signer.jsonrpc.config import JsonRpcConfig
from signer.jsonrpc.server import JsonRpcListener
from signer.service import KeyRing
from tests.conftest import env_wallet, open_app
from tests.support.serve_process import ServeProcess, start_serve
from tests.support.stub_node import StubNode
from tests.support.tls_certs import CertificateAuthority, Issued

_JSONRPC_PORT = re.compile(r"jsonrpc listening on \S+ \(port (\d+)")
_METRICS_PORT = re.compile(r"metrics on http://\S+:(\d+)/metrics")
TRADER = "spiffe://prod/agents/trader"


class _Node(StubNode):
    """A stand-in upstream node. `lie`: every eth_sendRawTransaction is "nonce too low" while
    the pending count stays 0 and the transaction is unknown."""

    def __init__(self, lie: bool = False) -> None:
        self.lie = lie
        super().__init__()

    def reply(self, method: str) -> dict[str, Any]:
        if self.lie and method == "eth_sendRawTransaction":
            return {"error": {"code": -32000, "message": "nonce too low"}}
        return super().reply(method)


@dataclass
class Served:
    running: ServeProcess
    port: int
    config: Path
    workdir: Path

    def metrics(self) -> str:
        port = _METRICS_PORT.search(self.running.log())
        assert port, self.running.log()
        with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/metrics", timeout=5) as r:
            return str(r.read().decode())


@pytest.fixture
def node() -> Iterator[_Node]:
    made = _Node()
    yield made
    made.close()


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    ca = CertificateAuthority(tmp_path)
    return {
        "ca": ca,
        "server": ca.server(),
        "trader": ca.issue("trader", uris=(TRADER,)),
        "reader": ca.issue("reader", dns=("reader.ops.internal",)),
        "relay": ca.issue("relay", uris=("spiffe://prod/agents/relay",)),
        "monitor": ca.issue("monitor", cn="monitor"),
        # no SANs, the trader's URI as its CN: a CN is not a URI identity
        "cn-trader": ca.issue("cn-trader", cn=TRADER),
        "stranger": ca.issue("stranger", uris=("spiffe://prod/agents/stranger",)),
    }


BASIC_CLIENTS = (  # valid on the code before the fixes, too
    f'[clients.trader]\nidentity = "{TRADER}"\nkeys = ["hot"]\n'
    '[clients.reader]\nidentity = "reader.ops.internal"\nkeys = ["hot"]\n'
    'methods = ["ListKeys", "GetAddress"]\n'
)
CLIENTS = BASIC_CLIENTS + (
    '[clients.relay]\nidentity = "uri:spiffe://prod/agents/relay"\nkeys = ["hot"]\n'
    'methods = ["ListKeys", "Forward"]\n'
    '[clients.monitor]\nidentity = "cn:monitor"\nkeys = ["hot"]\nmethods = ["ListKeys"]\n'
)


def _write_config(tmp_path: Path, pki: dict[str, Any] | None, clients: str = "",
                  jsonrpc: str = "", upstream: str | None = None) -> Path:
    config = tmp_path / "signer.toml"
    server = '[server]\nlisten = "127.0.0.1:0"\n'
    if pki is not None:
        server += (f'tls_cert_file = "{pki["server"].cert_file}"\n'
                   f'tls_key_file = "{pki["server"].key_file}"\n'
                   f'client_ca_file = "{pki["ca"].cert_file}"\n')
    config.write_text(
        server + f'[store]\nurl = "sqlite://{tmp_path / "state.db"}"\n'
        '[metrics]\nlisten = "127.0.0.1:0"\n'
        '[keys.hot]\nbackend = "env"\nprivate_key_env = "HOT_WALLET_KEY"\n'
        '[jsonrpc]\nlisten = "127.0.0.1:0"\n'
        + (f'upstream = "{upstream}"\n' if upstream else "") + jsonrpc + clients
    )
    return config


def _serve(tmp_path: Path, config: Path, env_key: str) -> Served:
    running = start_serve(tmp_path, config, {"HOT_WALLET_KEY": env_key})
    port = _JSONRPC_PORT.search(running.log())
    assert port, running.log()
    return Served(running, int(port.group(1)), config, tmp_path)


@pytest.fixture
def stop() -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for served in started:
        served.running.proc.kill()
        served.running.proc.wait(10)


def _context(pki: dict[str, Any], who: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["ca"].cert_file))
    if who is not None:
        issued: Issued = pki[who]
        context.load_cert_chain(issued.cert_file, issued.key_file)
    return context


def _exchange(port: int, raw: bytes, context: ssl.SSLContext | None = None,
              timeout: float = 10) -> bytes:
    """Send raw bytes, read until the server closes or a whole response arrived."""
    sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname="localhost")
    with sock:
        sock.sendall(raw)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            if length and len(body) >= int(length.group(1)) and b"connection: close" not in \
                    head.lower():
                return data


def _request(method: str, params: list[Any] | None = None, *, host: str = "127.0.0.1",
             headers: str = "Content-Type: application/json\r\n", request_id: int = 1) -> bytes:
    body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method,
                       "params": params or []}).encode()
    return (f"POST / HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: {len(body)}\r\n"
            "\r\n").encode() + body


def _answer(data: bytes) -> tuple[int, Any]:
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body.strip() else None


def _call(served: Served, pki: dict[str, Any], who: str | None, method: str,
          params: list[Any] | None = None) -> tuple[int, Any]:
    return _answer(_exchange(served.port, _request(method, params), _context(pki, who)))


# -- Access ---------------------------------------------------------------------------------

def test_a_reload_that_would_open_the_service_is_refused(tmp_path, pki, env_key, stop):
    # old: "config reloaded: 0 clients", then a caller with no certificate got eth_accounts
    served = _serve(tmp_path, _write_config(tmp_path, pki, BASIC_CLIENTS), env_key)
    stop.append(served)
    assert _call(served, pki, "trader", "eth_accounts")[0] == 200
    served.config.write_text(served.config.read_text().split("[clients.trader]")[0])
    served.running.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "config reload" not in served.running.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = served.running.log()
    assert "config reload failed" in log and "from identified to open" in log, log
    assert "config reloaded: 0 clients" not in log
    assert _call(served, pki, "trader", "eth_accounts")[0] == 200  # the old clients serve
    assert _call(served, pki, "stranger", "eth_accounts")[0] == 403
    with sqlite3.connect(tmp_path / "state.db") as db:
        bodies = [json.loads(b) for (b,) in db.execute("SELECT body FROM audit_log")]
    refused = [b for b in bodies if b.get("action") == "reload"]
    assert refused and refused[-1]["status"] == "REFUSED"
    assert "never changes the access mode" in refused[-1]["reason"]


def test_with_a_client_ca_no_certificate_gets_past_the_handshake(tmp_path, pki, env_key, stop):
    # old: CERT_OPTIONAL; with zero [clients] a caller without a certificate was served
    served = _serve(tmp_path, _write_config(tmp_path, pki), env_key)
    stop.append(served)
    try:  # TLS 1.3: the server's alert can arrive as an error or as a plain close
        data = _exchange(served.port, _request("eth_accounts"), _context(pki, None))
    except (ssl.SSLError, ConnectionError):
        data = b""
    assert data == b""
    status, reply = _call(served, pki, "stranger", "eth_accounts")  # open: any CA certificate
    assert status == 200 and len(reply["result"]) == 1


def test_a_cn_is_no_uri_identity_and_a_reader_gets_nothing_forwarded(
        tmp_path, pki, env_key, node, stop):
    served = _serve(tmp_path, _write_config(tmp_path, pki, BASIC_CLIENTS, upstream=node.url),
                    env_key)
    stop.append(served)
    # old: a CN-only certificate was taken for the URI client of the same name
    status, reply = _call(served, pki, "cn-trader", "eth_accounts")
    assert status == 403 and "matches no configured client" in reply["error"]["message"]
    assert _call(served, pki, "reader", "eth_accounts")[0] == 200  # untyped: a DNS SAN
    assert _call(served, pki, "trader", "eth_accounts")[0] == 200  # untyped: a URI SAN
    # old: a client allowed only ListKeys/GetAddress had each of these run on the node
    for method in ("admin_addPeer", "debug_setHead", "personal_unlockAccount",
                   "miner_setEtherbase", "eth_signTypedData_v3"):
        status, reply = _call(served, pki, "reader", method, ["x"])
        assert status == 200 and reply["error"]["code"] == -32601, (method, reply)
    for method in ("eth_blockNumber", "eth_sendRawTransaction"):
        status, reply = _call(served, pki, "reader", method, ["0x01"])
        assert reply["error"]["code"] == -32004, reply
        assert '"Forward"' in reply["error"]["message"]
    assert node.methods == []  # nothing reached the node


def test_typed_identities_and_the_forward_permission(tmp_path, pki, env_key, node, stop):
    served = _serve(tmp_path, _write_config(tmp_path, pki, CLIENTS, upstream=node.url), env_key)
    stop.append(served)
    assert _call(served, pki, "monitor", "eth_accounts")[0] == 200  # cn:monitor
    assert _call(served, pki, "relay", "eth_accounts")[0] == 200  # uri:
    for method in ("admin_addPeer", "debug_setHead", "txpool_content", "eth_signTypedData_v3"):
        reply = _call(served, pki, "relay", method, ["x"])[1]
        assert reply["error"]["code"] == -32601, (method, reply)
    assert node.methods == []
    assert _call(served, pki, "relay", "eth_blockNumber")[1]["result"] == "0x10"
    assert _call(served, pki, "relay", "eth_sendRawTransaction", ["0x01"])[1]["result"]
    assert node.methods == ["eth_blockNumber", "eth_sendRawTransaction"]


# -- browsers ---------------------------------------------------------------------------------

def test_a_web_page_cannot_make_the_loopback_door_sign(tmp_path, env_key, node, stop):
    served = _serve(tmp_path, _write_config(tmp_path, None, upstream=node.url), env_key)
    stop.append(served)
    send = _send(served)
    attacks = {
        # old: signed and submitted (a page's "simple request": no preflight)
        "text/plain from a page": _request(*send, host="evil.example",
                                           headers="Content-Type: text/plain\r\n"
                                                   "Origin: https://evil.example\r\n"),
        "an origin not allowed": _request(*send, headers="Content-Type: application/json\r\n"
                                                         "Origin: https://evil.example\r\n"),
        # DNS rebinding: the page's own name now points at 127.0.0.1
        "a rebound host name": _request("eth_accounts", host="evil.example:9000"),
        "text/plain": _request(*send, headers="Content-Type: text/plain\r\n"),
        "no content type": _request(*send, headers=""),
    }
    for attack, raw in attacks.items():
        status, reply = _answer(_exchange(served.port, raw))
        assert status == 403, (attack, status, reply)
        assert reply["error"]["message"], attack
    assert "eth_sendRawTransaction" not in node.methods
    assert 'wallet_signer_http_refusals_total{door="jsonrpc",status="403"} 5.0' in \
        served.metrics()
    assert served.running.log().count('"http": 403') == 5
    assert _answer(_exchange(served.port, _request("eth_accounts", host="[::1]:1")))[0] == 200
    assert _answer(_exchange(served.port, _request("eth_accounts", host="localhost")))[0] == 200


def test_allowed_origins_and_hosts_let_a_named_page_in(tmp_path, env_key, node, stop):
    served = _serve(tmp_path, _write_config(
        tmp_path, None, upstream=node.url,
        jsonrpc='allowed_origins = ["https://app.example"]\nallowed_hosts = ["signer.internal"]\n',
    ), env_key)
    stop.append(served)
    allowed = _request(*_send(served), host="signer.internal:9000",
                       headers="Content-Type: application/json; charset=utf-8\r\n"
                               "Origin: https://app.example\r\n")
    assert len(_answer(_exchange(served.port, allowed))[1]["result"]) == 66
    assert node.methods.count("eth_sendRawTransaction") == 1
    other = _request("eth_accounts", host="signer.internal",
                     headers="Content-Type: application/json\r\nOrigin: https://app.example.evil\r\n")
    assert _answer(_exchange(served.port, other))[0] == 403


def _send(served: Served) -> tuple[str, list[Any]]:
    address = _answer(_exchange(served.port, _request("eth_accounts")))[1]["result"][0]
    return "eth_sendTransaction", [{"from": address, "to": "0x" + "42" * 20, "value": "0x1"}]


# -- framing ----------------------------------------------------------------------------------

def test_framing_other_than_one_digits_only_content_length_is_refused(tmp_path, env_key, stop):
    served = _serve(tmp_path, _write_config(tmp_path, None), env_key)
    stop.append(served)
    body = b'{"jsonrpc":"2.0","id":1,"method":"eth_accounts"}'
    smuggled = b'{"jsonrpc":"2.0","id":2,"method":"eth_accounts"}'
    head = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    n = len(body)
    attacks = {
        # old: int() accepted both
        "underscore": head + b"Content-Length: " + f"{n // 10}_{n % 10}".encode() + b"\r\n",
        "plus sign": head + b"Content-Length: +" + str(n).encode() + b"\r\n",
        # old: the first won and the rest of the body was served as a second request
        "two lengths": head + b"Content-Length: " + str(n).encode() + b"\r\nContent-Length: "
        + str(n + len(smuggled)).encode() + b"\r\n",
        "repeated": head + (b"Content-Length: " + str(n).encode() + b"\r\n") * 2,
        "a length list": head + b"Content-Length: " + f"{n}, {n}".encode() + b"\r\n",
        # old: 411 with the connection kept open
        "chunked": head + b"Transfer-Encoding: chunked\r\n",
        "chunked and a length": head + b"Transfer-Encoding: chunked\r\nContent-Length: "
        + str(n).encode() + b"\r\n",
    }
    for attack, raw_head in attacks.items():
        data = _exchange(served.port, raw_head + b"\r\n" + body + smuggled)
        assert _answer(data)[0] == 400, (attack, data)
        assert data.count(b"HTTP/1.1") == 1, attack  # closed: nothing smuggled through
        assert b"connection: close" in data.lower(), attack
    good = _exchange(served.port, head + f"Content-Length: {n}\r\n\r\n".encode() + body)
    assert _answer(good)[0] == 200
    other_refusals = {
        411: head + b"\r\n" + body,
        413: head + b"Content-Length: 2000000\r\n\r\n",
        431: head + b"X-Padding: " + b"a" * 20_000 + b"\r\n\r\n",
        405: b"PUT / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
    }
    for expected, raw in other_refusals.items():
        assert _answer(_exchange(served.port, raw))[0] == expected
    metrics = served.metrics()
    log = served.running.log()
    for status, count in ((400, 7), (411, 1), (413, 1), (431, 1), (405, 1)):
        assert f'wallet_signer_http_refusals_total{{door="jsonrpc",status="{status}"}} ' \
            f'{count}.0' in metrics, status
        assert log.count(f'"http": {status}') == count, status


# -- slow callers -----------------------------------------------------------------------------

def test_strangers_holding_connections_do_not_shut_out_a_client(tmp_path, pki, env_key, stop):
    # old: 512 such connections (one thread each, capped at 512) and the client was dropped
    served = _serve(tmp_path, _write_config(tmp_path, pki, BASIC_CLIENTS), env_key)
    stop.append(served)
    stranger = _context(pki, "stranger")
    held = []
    try:
        for _ in range(520):
            sock = stranger.wrap_socket(
                socket.create_connection(("127.0.0.1", served.port), timeout=10),
                server_hostname="localhost")
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
            held.append(sock)
        started = time.monotonic()
        status, reply = _call(served, pki, "trader", "eth_accounts")
        assert status == 200 and len(reply["result"]) == 1
        assert time.monotonic() - started < 5
    finally:
        for sock in held:
            sock.close()


def test_a_request_must_arrive_within_the_request_timeout(tmp_path, env_key):
    app = open_app(KeyRing([env_wallet(env_key, "hot")]), tmp_path)
    listener = JsonRpcListener(app, JsonRpcConfig(listen="127.0.0.1:0",
                                                  request_timeout_seconds=1))
    listener.start()
    try:
        started = time.monotonic()
        # headers trickled in, one byte every 0.2 s: each read is quick, the whole is not
        with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as sock:
            data = b""
            for byte in b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\n":
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                time.sleep(0.2)
                sock.setblocking(False)
                try:
                    data += sock.recv(4096)
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
                if data:
                    break
        assert data.startswith(b"HTTP/1.1 408"), data
        assert time.monotonic() - started < 3
    finally:
        listener.stop(0)


def test_keep_alive_and_pipelined_requests_are_answered_in_order(tmp_path, env_key):
    app = open_app(KeyRing([env_wallet(env_key, "hot")]), tmp_path)
    listener = JsonRpcListener(app, JsonRpcConfig(listen="127.0.0.1:0"))
    listener.start()
    try:
        two = _request("health_status", request_id=11) + _request("eth_accounts", request_id=12)
        with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as sock:
            sock.sendall(two)
            data = b""
            while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"]}"):
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
        assert data.index(b'"id":11') < data.index(b'"id":12')
        assert b"connection: close" not in data.lower()
    finally:
        listener.stop(0)


# -- a lying node -----------------------------------------------------------------------------

def test_a_lying_node_gets_one_signature_not_three(tmp_path, env_key, stop):
    # old: re-signed with new nonces three times, each handed to the node
    node = _Node(lie=True)
    try:
        served = _serve(tmp_path, _write_config(tmp_path, None, upstream=node.url), env_key)
        stop.append(served)
        address = _answer(_exchange(served.port, _request("eth_accounts")))[1]["result"][0]
        _, reply = _answer(_exchange(served.port, _request(
            "eth_sendTransaction", [{"from": address, "to": "0x" + "42" * 20, "value": "0x1"}])))
        assert reply["error"]["message"].startswith("nonce too low"), reply
        assert node.methods.count("eth_sendRawTransaction") == 1, node.methods
        tx_hash = reply["error"]["message"].split("transaction ")[1].split()[0]
        with sqlite3.connect(tmp_path / "state.db") as db:
            bodies = [json.loads(b) for (b,) in db.execute("SELECT body FROM audit_log")]
        submissions = [b for b in bodies if b.get("action") == "submission"]
        assert len(submissions) == 1 and submissions[0]["unsent"] == [tx_hash]
        assert submissions[0]["status"] == "REFUSED"
    finally:
        node.close()
