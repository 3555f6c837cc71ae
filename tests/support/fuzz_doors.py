"""A fuzzing attacker for both doors of a real server: valid seed requests, mutated at random
and mixed with worst-case shapes for every parser (typed data, unsigned RLP, calldata, JSON-RPC
bodies and batches), sent as a known client, a stranger (a CA-issued certificate that names no
client) and a caller without a certificate. Runs in its own process (`attack`), so that its
CPU and interpreter lock are not the prober's. Every answer is checked as it comes back; the
summary counts what was seen and lists anything that should never happen."""

import http.client
import json
import random
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
import rlp

from signer.v1 import signer_pb2 as pb

SERVICE = "/signer.v1.SignerService/"
NEVER = {"UNKNOWN", "INTERNAL"}
FORBIDDEN_TEXT = ("Traceback", "signer fault", "Exception calling application")
KNOWN_RPC_CODES = {-32700, -32600, -32601, -32602, -32000, -32002, -32003, -32004, -32005}
HTTP_REFUSALS = {400, 401, 403, 404, 405, 408, 411, 413, 415, 429, 431}
TO = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


@dataclass(frozen=True)
class Target:
    grpc_target: str
    jsonrpc_host: str
    jsonrpc_port: int
    ca_pem: bytes
    identities: dict[str, tuple[bytes, bytes] | None]  # who -> (cert, key) or None
    address: str  # the key's address (JSON-RPC `from`)


@dataclass
class Summary:
    sent: int = 0
    grpc_codes: Counter[str] = field(default_factory=Counter)
    http_statuses: Counter[int] = field(default_factory=Counter)
    rpc_codes: Counter[int] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)
    slowest_seconds: float = 0.0
    slowest: str = ""


# -- worst-case shapes -------------------------------------------------------------------------

def _typed(message: Any, types: Any = None) -> str:
    return json.dumps({
        "types": types or {"EIP712Domain": [{"name": "name", "type": "string"}],
                           "M": [{"name": "a", "type": "uint256[]"}]},
        "primaryType": "M", "domain": {"name": "x"}, "message": message})


def _chain(types: int, instances: int) -> str:
    names = [f"T{i}" for i in range(types)]
    spec: dict[str, Any] = {
        n: [{"name": "v", "type": "uint256"}, {"name": "next", "type": f"{names[i + 1]}[]"}]
        for i, n in enumerate(names[:-1])}
    spec[names[-1]] = [{"name": "v", "type": "uint256"}]
    spec["EIP712Domain"] = [{"name": "name", "type": "string"}]
    return json.dumps({"types": spec, "primaryType": "T0", "domain": {"name": "x"},
                       "message": {"v": 0, "next": [{"v": 1, "next": []}] * instances}})


def typed_data_shapes(rng: random.Random) -> list[str]:
    return [
        '{"a":"' + '\\"' * rng.randint(1000, 40_000),  # unterminated escaped quotes
        "[" * 5000 + "]" * 5000,  # deep nesting
        '{"a":' * 3000,  # deep and unterminated
        _typed({"a": [int("9" * 80)]}),  # out of uint256
        _typed({"a": [1]}).replace("[1]", "1" * 4400),  # past the int-conversion limit
        _typed({"\ud800": 1}),  # lone surrogate
        _typed({"a": list(range(rng.randint(5000, 20_000)))}),  # long arrays, new lengths
        _chain(250, 1500),  # the 250-type chain
        _chain(300, 10),  # too many types
        _typed({"a": []}, {"M": [{"name": "a", "type": "uint256[" + "9" * 5000 + "]"}]}),
    ]


def rlp_shapes(rng: random.Random) -> list[bytes]:
    nested = b"\xc0"
    for _ in range(2000):
        nested = _rlp_list_prefix(len(nested)) + nested
    return [
        b"\x02" + nested,  # deep lists
        b"\x02\xff" + (2**63).to_bytes(8, "big"),  # a length far past the end
        b"\x02\xf8\x01",  # truncated
        b"\x02" + rlp.encode([b"\x00\x01"] * 9),  # non-canonical integers
        b"\x04" + rlp.encode([1, 0, 1, 1, 21000, bytes.fromhex(TO[2:]), 0, b"", [],
                               [[1, b"\x11" * 20, 0, 0, b"\x01", b"\x01"]] * 500]),
        bytes([rng.randrange(256)]) + rng.randbytes(rng.randint(0, 3000)),
    ]


def _rlp_list_prefix(size: int) -> bytes:
    if size < 56:
        return bytes([0xC0 + size])
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0xF7 + len(length)]) + length


def calldata_shapes(rng: random.Random) -> list[str]:
    return [
        "0xa9059cbb" + "ff" * rng.randint(0, 5000),  # transfer with garbage
        "0x095ea7b3" + "00" * 31 + "20" + "ff" * 64,  # offsets pointing anywhere
        "0x" + rng.randbytes(rng.randint(0, 4000)).hex(),
    ]


# -- seeds and mutations -----------------------------------------------------------------------

def grpc_corpus(rng: random.Random, address: str) -> list[tuple[str, bytes]]:
    tx = pb.Transaction(type=2, chain_id=1, to=TO, gas_limit=21000, max_fee_per_gas="10",
                        max_priority_fee_per_gas="1", value="1")
    seeds: list[tuple[str, Any]] = [
        ("ListKeys", pb.ListKeysRequest()),
        ("GetAddress", pb.GetAddressRequest(key_id="hot")),
        ("SignTransaction", pb.SignTransactionRequest(key_id="hot", transaction=tx)),
        ("SignMessage", pb.SignMessageRequest(key_id="hot", message=b"hello")),
        ("SignTypedData", pb.SignTypedDataRequest(key_id="hot", typed_data_json=_typed({"a": [1]}))),
        ("EvaluatePolicy", pb.EvaluatePolicyRequest(
            transaction=pb.SignTransactionRequest(key_id="hot", transaction=tx))),
    ]
    corpus = [(m, r.SerializeToString()) for m, r in seeds]
    for text in typed_data_shapes(rng):
        corpus.append(("SignTypedData", pb.SignTypedDataRequest(
            key_id="hot", typed_data_json=text).SerializeToString()))
    for raw in rlp_shapes(rng):
        corpus.append(("SignTransaction", pb.SignTransactionRequest(
            key_id="hot", unsigned_transaction=raw).SerializeToString()))
    for data in calldata_shapes(rng):
        call = pb.Transaction(type=2, chain_id=1, to=TO, gas_limit=90000, max_fee_per_gas="10",
                              max_priority_fee_per_gas="1", data=bytes.fromhex(data[2:]))
        corpus.append(("SignTransaction", pb.SignTransactionRequest(
            key_id="hot", transaction=call).SerializeToString()))
    corpus.append(("SignMessage", pb.SignMessageRequest(key_id="k" * 200_000,
                                                        message=b"m").SerializeToString()))
    base = list(corpus)
    for _ in range(1500):
        method, payload = rng.choice(base)
        corpus.append((method, mutate(rng, payload)))
    return corpus


def jsonrpc_corpus(rng: random.Random, address: str) -> list[bytes]:
    def body(method: str, params: Any, request_id: Any = 1) -> bytes:
        return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method,
                           "params": params}).encode()

    tx = {"from": address, "to": TO, "value": "0x1", "gas": "0x5208", "chainId": "0x1",
          "nonce": "0x0", "maxFeePerGas": "0xa", "maxPriorityFeePerGas": "0x1"}
    seeds = [
        body("eth_accounts", []),
        body("eth_signTransaction", [tx]),
        body("eth_sign", [address, "0x68656c6c6f"]),
        body("personal_sign", ["0x68656c6c6f", address]),
        body("eth_signTypedData_v4", [address, _typed({"a": [1]})]),
        body("eth_blockNumber", []),
        body("admin_addPeer", ["enode://x"]),
        json.dumps([json.loads(body("eth_accounts", [], i)) for i in range(200)]).encode(),
    ]
    shapes = [body("eth_signTypedData_v4", [address, text]) for text in typed_data_shapes(rng)]
    shapes += [
        b'{"jsonrpc":"2.0","id":1,"method":"eth_accounts","params":["' + b'\\"' * 60_000,
        b"[" * 20_000,
        b'{"jsonrpc":"2.0","id":1e400,"method":"eth_accounts","params":[]}',
        body("eth_signTransaction", [{**tx, "input": calldata_shapes(rng)[0]}]),
        json.dumps([json.loads(body("eth_sign", [address, "0x00"], i))
                    for i in range(2000)]).encode(),
    ]
    corpus = seeds + shapes
    for _ in range(1500):
        corpus.append(mutate(rng, rng.choice(seeds + shapes)))
    return corpus


def mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if not data or choice < 0.25:
            data[rng.randint(0, len(data)):rng.randint(0, len(data))] = rng.randbytes(
                rng.randint(1, 16))
        elif choice < 0.5:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice < 0.7:
            del data[rng.randint(0, len(data)):]
        elif choice < 0.85:
            start = rng.randrange(len(data))
            data[start:start] = data[start:start + rng.randint(1, 64)] * rng.randint(2, 50)
        else:
            data[rng.randint(0, len(data)):rng.randint(0, len(data))] = rng.choice(
                [b'"', b"\\", b"{", b"[", b"\\ud800", b"1e400", b"\xff", b"\x00", b"0x"])
    return bytes(data)


# -- the attack --------------------------------------------------------------------------------

def attack(target: Target, total: int, threads: int, seed: int,
           rate: float | None = None) -> Summary:
    """`total` requests from `threads` threads, as fast as answers come, or at most `rate` a
    second in all."""
    rng = random.Random(seed)
    grpc_items = grpc_corpus(rng, target.address)
    rpc_items = jsonrpc_corpus(rng, target.address)
    summary = Summary()
    lock = threading.Lock()
    counter = iter(range(total))
    started_at = time.monotonic()

    def note_slow(seconds: float, what: str) -> None:
        if seconds > summary.slowest_seconds:
            summary.slowest_seconds, summary.slowest = seconds, what

    def worker(index: int) -> None:
        local = random.Random(seed * 1000 + index)
        who = list(target.identities)[index % len(target.identities)]
        identity = target.identities[who]
        channel = _channel(target, identity)
        https = _Https(target, identity)
        try:
            for n in counter:
                if rate is not None:
                    delay = started_at + n / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                if n % 2:
                    method, payload = local.choice(grpc_items)
                    started = time.monotonic()
                    outcome = _grpc_call(channel, method, payload)
                    elapsed = time.monotonic() - started
                    with lock:
                        summary.sent += 1
                        summary.grpc_codes[outcome[0]] += 1
                        note_slow(elapsed, f"grpc {method} as {who}")
                        if outcome[0] in NEVER or any(t in outcome[1] for t in FORBIDDEN_TEXT):
                            summary.bad.append(f"grpc {method} as {who}: {outcome}")
                else:
                    payload = local.choice(rpc_items)
                    started = time.monotonic()
                    status, text = https.post(payload)
                    elapsed = time.monotonic() - started
                    with lock:
                        summary.sent += 1
                        summary.http_statuses[status] += 1
                        note_slow(elapsed, f"jsonrpc as {who}")
                        problem = _check_http(status, text, summary.rpc_codes)
                        if problem:
                            summary.bad.append(f"jsonrpc as {who}: {problem}")
        finally:
            channel.close()
            https.close()

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(600)
    summary.bad = summary.bad[:50]
    return summary


def _channel(target: Target, identity: tuple[bytes, bytes] | None) -> grpc.Channel:
    if identity is None:
        credentials = grpc.ssl_channel_credentials(target.ca_pem)
    else:
        credentials = grpc.ssl_channel_credentials(target.ca_pem, identity[1], identity[0])
    return grpc.secure_channel(target.grpc_target, credentials,
                               options=[("grpc.ssl_target_name_override", "localhost"),
                                        ("grpc.max_send_message_length", 8 << 20)])


def _grpc_call(channel: grpc.Channel, method: str, payload: bytes) -> tuple[str, str]:
    call = channel.unary_unary(SERVICE + method, request_serializer=None,
                               response_deserializer=None)
    try:
        call(payload, timeout=30)
        return "OK", ""
    except grpc.RpcError as exc:
        return exc.code().name, exc.details() or ""  # type: ignore[attr-defined]


class _Https:
    """One keep-alive HTTPS connection to the JSON-RPC door, re-opened when the door closes it
    (as it should after a refusal)."""

    def __init__(self, target: Target, identity: tuple[bytes, bytes] | None) -> None:
        self._target = target
        self._context = ssl.create_default_context(cadata=target.ca_pem.decode())
        self._context.check_hostname = False
        if identity is not None:
            import tempfile

            with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as pem:
                pem.write(identity[0] + identity[1])
            self._context.load_cert_chain(pem.name)
        self._connection: http.client.HTTPSConnection | None = None

    def post(self, body: bytes) -> tuple[int, str]:
        for _ in range(2):
            if self._connection is None:
                self._connection = http.client.HTTPSConnection(
                    self._target.jsonrpc_host, self._target.jsonrpc_port,
                    context=self._context, timeout=30)
            try:
                self._connection.request("POST", "/", body,
                                         {"Content-Type": "application/json"})
                reply = self._connection.getresponse()
                text = reply.read().decode("utf-8", "replace")
                if reply.getheader("Connection", "").lower() == "close":
                    self.close()
                return reply.status, text
            except (ssl.SSLError, OSError, http.client.HTTPException) as exc:
                self.close()
                error = exc
        return 0, f"connection: {type(error).__name__}"

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _check_http(status: int, text: str, codes: Counter[int]) -> str | None:
    if status == 0:
        return None  # the handshake refused a caller without a certificate: fine
    if any(t in text for t in FORBIDDEN_TEXT):
        return f"{status}: {text[:200]}"
    if status in HTTP_REFUSALS or (status == 204 and not text):  # 204: only notifications
        return None
    if status != 200:
        return f"HTTP {status}: {text[:200]}"
    try:
        replies = json.loads(text, parse_constant=_not_json)
    except ValueError as exc:
        return f"not strict JSON ({exc}): {text[:200]}"
    for reply in replies if isinstance(replies, list) else [replies]:
        if "error" in reply:
            codes[reply["error"]["code"]] += 1
            if reply["error"]["code"] not in KNOWN_RPC_CODES:
                return f"unknown code: {json.dumps(reply)[:200]}"
    return None


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
