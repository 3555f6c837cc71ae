"""A load generator in its own process: closed-loop gRPC callers, unary or streaming.

The benchmarks start one with `LoadGenerator()` (spawned, so its gRPC client work never shares
the measuring process's or the server's GIL) and ask it for runs; each run returns a Result.
A streaming caller keeps one `SignTransactions` stream open and sends its next request when the
previous answer arrives (one message in flight per caller, like a unary caller).
"""

import multiprocessing
import queue
import time
from collections.abc import Iterator
from typing import Any

from bench.common import Result, closed_loop

TX_TEMPLATE = {"type": 2, "chain_id": 1, "to": "0x" + "35" * 20, "value": "1",
               "gas_limit": 21000, "max_fee_per_gas": "30000000000",
               "max_priority_fee_per_gas": "1000000000"}
KINDS = ("unary", "stream")


class _Lockstep:
    """One open SignTransactions stream used as a call: put a request, take its answer."""

    def __init__(self, stub: Any, timeout: float) -> None:
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._replies: Iterator[Any] = stub.SignTransactions(iter(self._requests.get, None),
                                                             timeout=timeout)

    def call(self, request: Any) -> Any:
        self._requests.put(request)
        reply = next(self._replies)
        if reply.HasField("error"):
            raise RuntimeError(f"stream answered {reply.error.code}: {reply.error.message}")
        return reply

    def close(self) -> None:
        self._requests.put(None)
        for _ in self._replies:
            pass


def run(target: str, key_id: str, kind: str, callers: int, seconds: float) -> Result:
    import grpc

    from signer.v1 import signer_pb2 as pb
    from signer.v1 import signer_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(target)
    stub = pb_grpc.SignerServiceStub(channel)

    def request(caller: int, n: int) -> Any:
        # a distinct transaction per call: nonce n of this caller
        tx = pb.Transaction(nonce=caller * 1_000_000 + n, **TX_TEMPLATE)  # type: ignore[arg-type]
        return pb.SignTransactionRequest(key_id=key_id, transaction=tx)

    try:
        if kind == "unary":
            stub.SignTransaction(request(0, 0), timeout=30)  # warm the channel up
            return closed_loop(f"gRPC SignTransaction ({kind})", callers, seconds,
                               lambda caller, n: stub.SignTransaction(request(caller, n), timeout=30))
        streams = [_Lockstep(stub, seconds + 60) for _ in range(callers)]
        for s in streams:
            s.call(request(0, 0))
        try:
            return closed_loop(f"gRPC SignTransactions ({kind})", callers, seconds,
                               lambda caller, n: streams[caller].call(request(caller, n)))
        finally:
            for s in streams:
                s.close()
    finally:
        channel.close()


def _serve(tasks: Any, results: Any) -> None:
    for task in iter(tasks.get, None):
        try:
            results.put(run(*task))
        except Exception as exc:  # reported to the parent, which raises it
            results.put(exc)


class LoadGenerator:
    """A spawned process that runs closed-loop callers on request; close() ends it."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._tasks = context.Queue()
        self._results = context.Queue()
        self._process = context.Process(target=_serve, args=(self._tasks, self._results),
                                        daemon=True)
        self._process.start()

    def run(self, target: str, key_id: str, kind: str, callers: int, seconds: float) -> Result:
        assert kind in KINDS
        self._tasks.put((target, key_id, kind, callers, seconds))
        give_up = time.monotonic() + seconds + 120
        while True:
            try:
                result = self._results.get(timeout=1)
                break
            except queue.Empty:
                if not self._process.is_alive() or time.monotonic() > give_up:
                    raise RuntimeError("the load generator died or hung") from None
        if isinstance(result, Exception):
            raise result
        return result  # type: ignore[no-any-return]

    def close(self) -> None:
        self._tasks.put(None)
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
