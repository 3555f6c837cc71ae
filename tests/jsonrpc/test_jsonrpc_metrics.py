"""The JSON-RPC door in the request metrics and the access log, like a gRPC call.

Each JSON-RPC request (each member of a batch) is one `wallet_signer_requests_total` sample:
method `jsonrpc/<method>` (forwarded methods as one series, unknown names as "(other)": a
caller cannot create series), status in the gRPC vocabulary, the key the request resolved to
by its address, the client. The access line escapes caller-supplied values (request id, method
names) so they cannot forge fields. Real listener, real anvil upstream, prometheus-client's own
registry read back.
"""

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from eth_account import Account
from prometheus_client import REGISTRY

from signer import logs
from tests.jsonrpc.conftest import Anvil, Door, post, result, rpc


def requests(method: str, status: str, key_id: str = "") -> float:
    labels = {"method": method, "status": status, "key_id": key_id, "client": ""}
    return REGISTRY.get_sample_value("wallet_signer_requests_total", labels) or 0.0


def observed(method: str, key_id: str = "") -> float:
    labels = {"method": method, "key_id": key_id}
    return REGISTRY.get_sample_value("wallet_signer_request_duration_seconds_count", labels) or 0.0


def _tx(door: Door, anvil: Anvil, nonce: int = 0) -> dict[str, Any]:
    return {"from": door.address, "to": "0x" + "22" * 20, "value": "0x1", "gas": "0x5208",
            "gasPrice": hex(10**9), "nonce": hex(nonce), "chainId": hex(anvil.chain_id)}


def test_signing_forwarded_and_failed_requests_are_counted(door: Door, anvil: Anvil) -> None:
    sign = "jsonrpc/eth_signTransaction"
    before = {
        "signed": requests(sign, "OK", "hot"),
        "latency": observed(sign, "hot"),
        "invalid": requests(sign, "INVALID_ARGUMENT"),
        "forwarded": requests("jsonrpc/(forwarded)", "OK"),
        "unknown_from": requests(sign, "NOT_FOUND"),
    }
    raw = result(door.url, "eth_signTransaction", [_tx(door, anvil)])
    assert raw.startswith("0x")
    assert rpc(door.url, "eth_signTransaction", [{"from": door.address}])["error"]["code"] == -32602
    assert int(result(door.url, "eth_chainId"), 16) == anvil.chain_id
    stranger = Account.create().address
    assert rpc(door.url, "eth_signTransaction", [{**_tx(door, anvil), "from": stranger}])["error"]
    assert requests(sign, "OK", "hot") == before["signed"] + 1  # the key found by its address
    assert observed(sign, "hot") == before["latency"] + 1
    assert requests(sign, "INVALID_ARGUMENT") == before["invalid"] + 1
    assert requests("jsonrpc/(forwarded)", "OK") == before["forwarded"] + 1
    assert requests(sign, "NOT_FOUND") == before["unknown_from"] + 1  # no key for that address


def test_caller_chosen_method_names_create_no_series(door_factory: Any) -> None:
    door = door_factory(upstream=None, fund=False)
    name = "eth_attacker_series_3f1c"
    before = requests("(other)", "UNIMPLEMENTED")
    batch = [{"jsonrpc": "2.0", "id": i, "method": f"{name}{i}"} for i in range(3)]
    status, replies = post(door.url, json.dumps(batch).encode())
    assert status == 200 and [r["error"]["code"] for r in replies] == [-32601] * 3
    assert requests("(other)", "UNIMPLEMENTED") == before + 3
    exposed = [s for m in REGISTRY.collect() for s in m.samples
               if any(name in str(v) for v in s.labels.values())]
    assert exposed == []


def test_refused_before_any_method_are_counted(door_factory: Any) -> None:
    door = door_factory(upstream=None, fund=False, max_request_bytes=1024)
    before = {s: requests("(other)", s) for s in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED")}
    assert post(door.url, b"{not json")[1]["error"]["code"] == -32700
    assert post(door.url, b"[]")[1]["error"]["code"] == -32600
    assert post(door.url, b" " * 2048)[0] == 413
    assert requests("(other)", "INVALID_ARGUMENT") == before["INVALID_ARGUMENT"] + 2
    assert requests("(other)", "RESOURCE_EXHAUSTED") == before["RESOURCE_EXHAUSTED"] + 1


@pytest.fixture
def access_lines() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("signer.access")
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_access_line_cannot_be_forged_by_the_caller(door_factory: Any,
                                                    access_lines: list[logging.LogRecord]) -> None:
    door = door_factory(upstream=None, fund=False)
    forged_id = 'r1 http=200 errors=0 status="OK"'
    forged_method = 'x http=200 request_id=evil'
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": forged_method}).encode()
    status, _ = post(door.url, body, headers={"x-request-id": forged_id})
    assert status == 200
    # the door writes its access line after the answer has left: wait for it (bounded)
    deadline = time.monotonic() + 5
    while True:
        found = [r for r in access_lines if isinstance(r.msg, logs.Fields)
                 and r.msg.text == "jsonrpc" and r.msg.fields["request_id"] == forged_id]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    record = found[0]
    entry = json.loads(logs.JsonFormatter().format(record))
    assert entry["request_id"] == forged_id and entry["methods"] == forged_method
    assert entry["http"] == 200 and entry["errors"] == 1
    text = logging.Formatter("%(message)s").format(record)
    quoted = {json.dumps(forged_id): "ID", json.dumps(forged_method): "M"}
    for value in quoted:  # each caller value stays one quoted, escaped value
        assert value in text
    for value, stand_in in quoted.items():
        text = text.replace(value, stand_in)
    assert text.split() == ["jsonrpc", "methods=M", f"peer={record.msg.fields['peer']}",
                            "request_id=ID", "http=200", "errors=1",
                            f"ms={record.msg.fields['ms']:.2f}"]
