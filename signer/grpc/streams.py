"""Bounds on `SignTransactions` streams: a stream holds one worker thread for as long as it is
open, so four idle streams from one certificate once blocked every worker of a server with
`max_workers = 4`. Each client may hold at most `server.max_streams_per_client` streams, and a
stream that waits longer than `server.stream_idle_seconds` for its next message is cancelled.

One sweeper thread, started with the server, cancels idle streams (a stream cannot time out its
own wait: grpc's request iterator waits without a timeout, and `context.cancel()` from another
thread is what ends that wait).
"""

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, cast

import grpc

from signer.errors import ResourceExhausted

log = logging.getLogger(__name__)


class _Waiting(Protocol):
    """A stream's request iterator that knows since when it has waited for a message
    (signer.grpc.interceptors' stream wrapper)."""

    waiting_since: float | None


class StreamGuard:
    def __init__(self, max_per_client: int, idle_seconds: float) -> None:
        self._max_per_client = max_per_client
        self._idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._open: Counter[str] = Counter()
        self._watched: dict[int, tuple[_Waiting, grpc.ServicerContext]] = {}
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep, name="stream-idle", daemon=True)

    def start(self) -> None:
        self._sweeper.start()

    def stop(self) -> None:
        self._stop.set()
        if self._sweeper.is_alive():
            self._sweeper.join(timeout=2)

    @contextmanager
    def hold(self, client: str, requests: object, context: grpc.ServicerContext) -> Iterator[None]:
        """A slot for one of `client`'s streams (ResourceExhausted when it holds its maximum);
        while it is held, the stream is cancelled if it waits too long for a message."""
        with self._lock:
            if self._open[client] >= self._max_per_client:
                raise ResourceExhausted(
                    f"this client already has {self._max_per_client} SignTransactions streams "
                    "open (server.max_streams_per_client): send on one of them"
                )
            self._open[client] += 1
            if hasattr(requests, "waiting_since"):
                self._watched[id(requests)] = (cast(_Waiting, requests), context)
        try:
            yield
        finally:
            with self._lock:
                self._open[client] -= 1
                if not self._open[client]:
                    del self._open[client]
                self._watched.pop(id(requests), None)

    def _sweep(self) -> None:
        period = min(1.0, self._idle_seconds / 4)
        while not self._stop.wait(period):
            now = time.monotonic()
            with self._lock:
                idle = [
                    context for requests, context in self._watched.values()
                    if requests.waiting_since is not None
                    and now - requests.waiting_since > self._idle_seconds
                ]
            for context in idle:
                log.info("cancelling a SignTransactions stream idle for over %gs "
                         "(server.stream_idle_seconds)", self._idle_seconds)
                context.cancel()  # type: ignore[no-untyped-call]
