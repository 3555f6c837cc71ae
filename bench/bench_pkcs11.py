"""PKCS#11 benchmark: the service's SignTransaction rate against the raw python-pkcs11 loop.

Everything runs in one go against a throwaway SoftHSM token: the raw C_Sign loop on 1 session
and on one session per core (threads; python-pkcs11 releases the GIL in C_Sign), then
SignTransaction over gRPC on loopback with 1, 4 and 16 concurrent callers. The callers run in a
separate process so their gRPC client work does not share the server's GIL.
"""

import contextlib
import multiprocessing
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import closed_loop

DURATION = float(os.environ.get("BENCH_SECONDS", "3"))
# Optional: the server process's GIL switch interval (seconds), to measure its effect.
SWITCH_INTERVAL = os.environ.get("BENCH_SWITCH_INTERVAL")
SETUP_SCRIPT = Path(__file__).resolve().parent.parent / "softhsm" / "setup-token.sh"
TOKEN = "bench"
TX_TEMPLATE: dict[str, Any] = {"type": 2, "chain_id": 1, "to": "0x" + "35" * 20, "value": "1",
               "gas_limit": 21000, "max_fee_per_gas": "30000000000",
               "max_priority_fee_per_gas": "1000000000"}


def raw_rate(connection: Any, sessions: int) -> float:
    from pkcs11 import Mechanism, ObjectClass

    opened = [connection.open_session() for _ in range(sessions)]
    keys = [s.get_key(object_class=ObjectClass.PRIVATE_KEY, label="bench") for s in opened]
    digest = bytes(range(32))

    def sign(caller: int, n: int) -> None:
        keys[caller].sign(digest, mechanism=Mechanism.ECDSA)

    try:
        return closed_loop("raw", sessions, DURATION, sign).per_second
    finally:
        for session in opened:
            connection.library.raw.close_session(session.handle)


def backend_rate(signer: Any, threads: int, whole_transaction: bool) -> float:
    """The service's own layers without gRPC: the digest backend alone, or WalletSigner."""
    from signer.grpc import convert
    from signer.v1 import signer_pb2 as pb

    tx = convert.transaction_from_request(pb.SignTransactionRequest(
        key_id="bench", transaction=pb.Transaction(**TX_TEMPLATE)))
    digest = bytes(range(32))

    def sign(caller: int, n: int) -> None:
        if whole_transaction:
            signer.sign_transaction(tx)
        else:
            signer.backend.sign_digest(digest, None)

    return closed_loop("backend", threads, DURATION, sign).per_second


def _callers(target: str, callers: int, duration: float, out: Any) -> None:
    import grpc

    from signer.v1 import signer_pb2 as pb
    from signer.v1 import signer_pb2_grpc as pb_grpc

    stub = pb_grpc.SignerServiceStub(grpc.insecure_channel(target))

    def sign(caller: int, n: int) -> None:
        # a distinct transaction per call: nonce n of this caller
        tx = pb.Transaction(nonce=caller * 1_000_000 + n, **TX_TEMPLATE)
        stub.SignTransaction(pb.SignTransactionRequest(key_id="bench", transaction=tx), timeout=30)

    sign(0, 0)  # warm the channel up
    out.put(closed_loop("gRPC", callers, duration, sign).per_second)


def grpc_rate(target: str, callers: int) -> float:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    process = context.Process(target=_callers, args=(target, callers, DURATION, out))
    process.start()
    result: float = out.get(timeout=DURATION + 60)
    process.join()
    return result


@contextlib.contextmanager
def softhsm_token() -> Iterator[Path]:
    """A throwaway SoftHSM token TOKEN with a key labelled "bench" (SOFTHSM2_CONF is set for
    this process and its children); yields the user PIN file."""
    with tempfile.TemporaryDirectory(prefix="bench-softhsm-") as state:
        subprocess.run(["bash", str(SETUP_SCRIPT), state, TOKEN], check=True, capture_output=True)
        os.environ["SOFTHSM2_CONF"] = str(Path(state) / "softhsm2.conf")
        pin_file = Path(state) / "user-pin"
        subprocess.run([sys.executable, "-m", "signer.cli", "--log-level", "ERROR", "keys",
                        "create", "--backend", "pkcs11", "--label", "bench", "--token-label",
                        TOKEN, "--pin-file", str(pin_file)], check=True, capture_output=True)
        yield pin_file


def main() -> None:
    from signer.app.access import AccessControl
    from signer.backends import pkcs11
    from signer.backends.pkcs11 import Pkcs11Backend
    from signer.config import SOFTHSM_MODULE, Config, Pkcs11KeyConfig, ServerConfig, StoreConfig
    from signer.runtime import Runtime
    from signer.service import KeyRing
    from signer.wallet import WalletSigner

    cores = os.cpu_count() or 1
    if SWITCH_INTERVAL:
        sys.setswitchinterval(float(SWITCH_INTERVAL))
    with softhsm_token() as pin_file:
        connection = pkcs11.connect(SOFTHSM_MODULE, TOKEN, pin_file.read_text().strip())
        try:
            results = {"raw, 1 session": raw_rate(connection, 1),
                       f"raw, {cores} sessions (1 per core)": raw_rate(connection, cores)}
            config = Pkcs11KeyConfig(backend="pkcs11", token_label=TOKEN, pin_file=pin_file,
                                     key_label="bench", pool_size=max(4, cores))
            signer = WalletSigner("bench", Pkcs11Backend.open("bench", config))
            for threads in (1, cores):
                results[f"Pkcs11Backend.sign_digest, {threads} threads"] = backend_rate(
                    signer, threads, whole_transaction=False)
            results[f"WalletSigner.sign_transaction, {cores} thr"] = backend_rate(
                signer, cores, whole_transaction=True)
            served = Config(server=ServerConfig(listen="127.0.0.1:0"),
                            store=StoreConfig(url=f"sqlite://{pin_file.parent / 'state.db'}"))
            with Runtime(served) as runtime:
                runtime.open_keyring(KeyRing([signer]))
                runtime.open_application(access=AccessControl({}))  # open, and no warning of it
                server = runtime.start().grpc
                server.self_test_and_mark_ready()
                for callers in (1, 4, 16):
                    results[f"gRPC SignTransaction, {callers} callers"] = grpc_rate(
                        f"127.0.0.1:{server.port}", callers)
        finally:
            pkcs11.disconnect(connection)
    baseline = results[f"raw, {cores} sessions (1 per core)"]
    print(f"PKCS#11 (SoftHSM) benchmark, {cores} cores, {DURATION:.0f} s per row, "
          f"switch interval {sys.getswitchinterval() * 1000:g} ms")
    print(f"{'':42} {'sig/s':>7} {'vs raw multi-session':>21}")
    for name, value in results.items():
        print(f"{name:42} {value:7.0f} {value / baseline:21.0%}")


if __name__ == "__main__":
    main()
