"""Whether a key can sign right now, as its backend last showed (a call or a self-test).

Transport-neutral: the gRPC health service (signer.grpc.health) and the metrics follow it.
"""

import threading
import time
from collections.abc import Callable

from signer import metrics

Listener = Callable[[str, bool], None]


class KeyHealth:
    """`serving` flips to False on a backend fault and back on the next good signature.

    `self_tested` is set once the start-up self-test has passed; a server refuses to sign with
    a key before that (WalletSigner.require_self_test).
    """

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        self.self_tested = False
        self.serving = False
        self.last_success = float("-inf")  # time.monotonic() of the last good signature
        # why the last reload could not re-open this key (it keeps serving its previous
        # version; the health check shows NOT_SERVING until a reload loads it)
        self.load_error: str | None = None
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        metrics.key_serving(key_id, False)

    def subscribe(self, listener: Listener) -> None:
        """`listener(key_id, serving)` is called on every change, from the thread that saw it."""
        self._listeners.append(listener)

    def succeeded(self) -> None:
        self.last_success = time.monotonic()
        if not self.serving:
            self._set(True)

    def failed(self) -> None:
        if self.serving or not self.self_tested:
            self._set(False)

    def load_failed(self, reason: str) -> None:
        self.load_error = reason
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(self.key_id, False)

    @property
    def healthy(self) -> bool:
        """What the health check reports: serving, and loaded as configured."""
        return self.serving and self.load_error is None

    def _set(self, serving: bool) -> None:
        with self._lock:
            self.serving = serving
            metrics.key_serving(self.key_id, serving)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(self.key_id, serving)
