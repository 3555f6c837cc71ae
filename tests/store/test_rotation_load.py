"""Rotation under load: 16 callers sign continuously through rotate -> drain -> retire on two
`serve` processes sharing one PostgreSQL store.

12 callers sign by key id over gRPC (they must never fail, and each signature must come from
the version active when it was signed); 4 sign sweeps to the new address by the old address
over JSON-RPC (they must succeed while the old version drains, and no signature of the old
version may come back once `keys retire` has returned). The audit log of both replicas and
both commands must verify."""

import json
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
from eth_account import Account

from signer import cli
from signer.client import transaction_to_proto
from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc
from tests.support.serve_process import ServeProcess, jsonrpc_url, start_serve

GRPC_CALLERS, JSONRPC_CALLERS = 12, 4
PHASE_SECONDS = 3.0


def _config(directory: Path, url: str, password_file: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "signer.toml"
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\nmax_workers = 16\n'
        f'[store]\nurl = "{url}"\npassword_file = "{password_file}"\n'
        '[keys.hot]\nbackend = "env"\nprivate_key_env = "ROT_OLD"\n'
        '[keys.next]\nbackend = "env"\nprivate_key_env = "ROT_NEW"\n'
        '[jsonrpc]\nlisten = "127.0.0.1:0"\n'
    )
    return path


class Calls:
    """Every call: (started, finished, signer address or None, error or None)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: list[tuple[float, float, str | None, str | None]] = []

    def add(self, started: float, address: str | None, error: str | None) -> None:
        with self.lock:
            self.rows.append((started, time.monotonic(), address, error))


def _grpc_caller(target: str, stop: threading.Event, calls: Calls, n: int) -> None:
    stub = pb_grpc.SignerServiceStub(grpc.insecure_channel(target))
    nonce = 0
    while not stop.is_set():
        tx = {"type": 2, "chainId": 1, "nonce": nonce, "to": "0x" + "11" * 20, "value": n,
              "gas": 21000, "maxFeePerGas": 10**9, "maxPriorityFeePerGas": 10**9}
        started = time.monotonic()
        try:
            reply = stub.SignTransaction(
                pb.SignTransactionRequest(key_id="hot", transaction=transaction_to_proto(tx)),
                timeout=20)
            calls.add(started, Account.recover_transaction(reply.raw_transaction), None)
        except grpc.RpcError as exc:
            calls.add(started, None, f"{exc.code().name}: {exc.details()}")
        nonce += 1


def _jsonrpc_caller(url: str, old: str, new: str, stop: threading.Event, calls: Calls) -> None:
    nonce = 0
    while not stop.is_set():
        tx = {"from": old, "to": new, "value": "0x1", "nonce": hex(nonce), "gas": "0x5208",
              "chainId": "0x1", "maxFeePerGas": hex(10**9), "maxPriorityFeePerGas": hex(10**9)}
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_signTransaction",
                           "params": [tx]}).encode()
        started = time.monotonic()
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                reply: dict[str, Any] = json.loads(response.read())
        except Exception as exc:  # an HTTP error is a failed call, recorded as such
            calls.add(started, None, f"http: {exc}")
            nonce += 1
            continue
        if "error" in reply:
            calls.add(started, None, str(reply["error"].get("message")))
        else:
            calls.add(started, Account.recover_transaction(reply["result"]), None)
        nonce += 1


def _stop(served: ServeProcess) -> None:
    if served.proc.poll() is None:
        served.proc.send_signal(signal.SIGTERM)
        served.proc.wait(20)


def test_rotate_drain_retire_under_load_on_two_replicas(tmp_path, postgres_db, capsys,
                                                        monkeypatch):
    old, new = Account.create(), Account.create()
    env = {"ROT_OLD": old.key.hex(), "ROT_NEW": new.key.hex()}
    for name, value in env.items():  # the operator's commands open the keys too
        monkeypatch.setenv(name, value)
    pw_file = postgres_db.write_password_file(tmp_path / "pg-password")
    configs = [_config(tmp_path / f"r{i}", postgres_db.password_url, pw_file) for i in (1, 2)]
    replicas = [start_serve(c.parent, c, env) for c in configs]
    stop = threading.Event()
    by_key, by_address = Calls(), Calls()
    threads = [threading.Thread(target=_grpc_caller, args=(
        replicas[i % 2].target, stop, by_key, i), daemon=True) for i in range(GRPC_CALLERS)]
    threads += [threading.Thread(target=_jsonrpc_caller, args=(
        jsonrpc_url(replicas[i % 2]), old.address, new.address, stop, by_address), daemon=True)
        for i in range(JSONRPC_CALLERS)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(PHASE_SECONDS)
        rotate_started = time.monotonic()
        assert cli.main(["keys", "rotate", "hot", "--to", "next",
                         "--config", str(configs[0])]) == 0
        rotate_done = time.monotonic()
        time.sleep(PHASE_SECONDS)
        retire_started = time.monotonic()
        assert cli.main(["keys", "retire", "hot", "--version", "1", "--reason", "drill: swept",
                         "--config", str(configs[1])]) == 0
        retire_done = time.monotonic()
        for replica in replicas:  # both replicas list the versions and answer the active one
            stub = pb_grpc.SignerServiceStub(grpc.insecure_channel(replica.target))
            hot = {k.key_id: k for k in stub.ListKeys(pb.ListKeysRequest(), timeout=10).keys}["hot"]
            assert hot.address == new.address
            assert [(v.version, v.address, v.state) for v in hot.versions] == [
                (1, old.address, "retired"), (2, new.address, "active")]
            assert hot.versions[0].reason == "drill: swept"
            assert stub.GetAddress(pb.GetAddressRequest(key_id="hot"), timeout=10).address == \
                new.address
        time.sleep(PHASE_SECONDS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        for replica in replicas:
            _stop(replica)

    # by key id: 0 failed calls; the version active when signed
    assert by_key.rows and not [r for r in by_key.rows if r[3] is not None], \
        [r for r in by_key.rows if r[3] is not None][:3]
    for started, finished, address, _ in by_key.rows:
        if finished < rotate_started:
            assert address == old.address
        elif started > rotate_done:
            assert address == new.address
        else:
            assert address in (old.address, new.address)
    assert sum(1 for r in by_key.rows if r[1] < rotate_started) > 20
    assert sum(1 for r in by_key.rows if r[0] > rotate_done) > 20
    # by address (sweeps of the old version): 0 failures before the retirement, only the old
    # version's signatures, and none once the retire command returned
    for started, finished, address, error in by_address.rows:
        if finished < retire_started:
            assert error is None and address == old.address, error
        if finished > retire_done:
            assert address is None
            assert error is not None and "version 1" in error and "was retired at" in error \
                and "drill: swept; it never signs again" in error, error
        if address is not None:
            assert address == old.address
    assert sum(1 for r in by_address.rows if rotate_done < r[0] and r[1] < retire_started) > 5
    assert sum(1 for r in by_address.rows if r[0] > retire_done) > 5
    with capsys.disabled():  # the load, for the record (shown with -s)
        print(f"\n{len(by_key.rows)} calls by key id, {len(by_address.rows)} by address")
    capsys.readouterr()
    assert cli.main(["audit", "verify", "--config", str(configs[0])]) == 0
    assert "audit log intact" in capsys.readouterr().out
    for replica in replicas:
        assert old.key.hex()[2:] not in replica.log() and postgres_db.password not in replica.log()
