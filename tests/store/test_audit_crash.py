"""A `kill -9` under concurrent signing load: every signature a client received has its outcome
record, the log verifies, and at most the requests in flight are left incomplete."""

import json
import signal
import threading
import time

import grpc
from eth_utils import keccak

from signer.app.audit import verify
from signer.store import open_store
from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc
from tests.support.serve_process import start_serve

CALLERS = 8


def test_kill_9_leaves_an_outcome_for_every_signature_received(tmp_path, env_key):
    db = tmp_path / "state.db"
    config = tmp_path / "signer.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\n[store]\nurl = "sqlite://{db}"\n'
        '[keys.hot]\nbackend = "env"\nprivate_key_env = "HOT_WALLET_KEY"\n'
    )
    served = start_serve(tmp_path, config, {"HOT_WALLET_KEY": env_key})
    received: list[bytes] = []  # keccak of every signature a client got
    lock = threading.Lock()
    stop = threading.Event()

    def caller(n: int) -> None:
        stub = pb_grpc.SignerServiceStub(grpc.insecure_channel(served.target))
        i = 0
        while not stop.is_set():
            try:
                reply = stub.SignMessage(
                    pb.SignMessageRequest(key_id="hot", message=f"{n}-{i}".encode()), timeout=5
                )
            except grpc.RpcError:
                return  # the server is gone
            with lock:
                received.append(keccak(reply.signature))
            i += 1

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(CALLERS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(received) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    served.proc.send_signal(signal.SIGKILL)
    served.proc.wait(10)
    stop.set()
    for t in threads:
        t.join(10)
    assert len(received) >= 200

    store = open_store(f"sqlite://{db}")
    try:
        outcomes = {
            json.loads(r.body).get("result")
            for w in store.writers()
            for r in store.audit_rows(w)
            if json.loads(r.body)["kind"] == "outcome"
        }
        missing = [s for s in received if "0x" + s.hex() not in outcomes]
        assert missing == []
        report = verify(store)
        assert report.ok, report.problem
        assert len(report.incomplete) <= CALLERS
    finally:
        store.close()
