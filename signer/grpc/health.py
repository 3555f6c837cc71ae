"""grpc.health.v1 statuses that follow the keys, and the periodic self-test that revives them.

Names: `signer.v1.SignerService/<key_id>` per key, plus the overall `signer.v1.SignerService`
and "" (the whole server). Everything is NOT_SERVING until the start-up self-test of every key
has passed. After that, a key is SERVING while its last backend signature (a call or a
self-test) succeeded; a backend fault (UNAVAILABLE, FAILED_PRECONDITION, PERMISSION_DENIED from
the backend) makes it NOT_SERVING until a signature succeeds again. The overall names are
SERVING while at least one key is (or no key is configured): one bad key must not take the
replica, and with a shared KMS key every replica, out of a load balancer for all other keys.

`liveness` is SERVING from the end of the start-up self-test until shutdown, whatever the
backends do: it answers "is this process serving requests", for a liveness probe that must not
restart every replica when a shared backend is down (they recover by themselves, see above).
"""

import logging
import threading
import time

from grpc_health.v1 import health, health_pb2

from signer.service import KeyRing
from signer.wallet import WalletSigner

log = logging.getLogger(__name__)

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# The periodic self-test gives a backend this long to sign (HSM session wait, KMS retries).
SELF_TEST_TIMEOUT_SECONDS = 10.0
# SERVING while the process serves, independent of the keys (for liveness probes).
LIVENESS_NAME = "liveness"


def key_service_name(service: str, key_id: str) -> str:
    return f"{service}/{key_id}"


class KeyHealthReporter:
    """Owns the health servicer; start() after the start-up self-test, stop() before closing
    the backends."""

    def __init__(self, keyring: KeyRing, service: str, interval: float) -> None:
        self.servicer = health.HealthServicer(experimental_non_blocking=True)
        self._keyring = keyring
        self._service = service
        self._interval = interval
        self._started = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for name in ("", service, LIVENESS_NAME,
                     *(key_service_name(service, s.key_id) for s in keyring)):
            self.servicer.set(name, _NOT_SERVING)
        self._subscribed: set[int] = set()
        self._names: set[str] = set()
        self._subscribe_new()
        keyring.subscribe(self._reloaded)

    def start(self) -> None:
        """Publish every key's state and start the periodic self-test."""
        self._started = True
        self._publish()
        self.servicer.set(LIVENESS_NAME, _SERVING)
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """NOT_SERVING for every name from now on; stop the self-test (waits at most
        `timeout` for one in progress)."""
        self.servicer.enter_graceful_shutdown()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _subscribe_new(self) -> None:
        for signer in self._keyring:
            if id(signer.health) not in self._subscribed:
                self._subscribed.add(id(signer.health))
                signer.health.subscribe(self._changed)

    def _reloaded(self) -> None:
        """A reload swapped the keyring's map: follow its new keys, publish every name."""
        self._subscribe_new()
        if self._started:
            self._publish()

    def _changed(self, key_id: str, serving: bool) -> None:
        if self._started:
            self._publish()
            if not serving:
                log.warning("key %r: backend failing; health NOT_SERVING until a signature "
                            "succeeds again", key_id)
            else:
                log.info("key %r: signing again; health SERVING", key_id)

    def _publish(self) -> None:
        # Re-read every key under one lock: listeners from two threads cannot interleave into
        # a stale overall status.
        with self._lock:
            serving = [s for s in self._keyring if s.health.serving]
            names = set()
            for signer in self._keyring:
                status = _SERVING if signer.health.healthy else _NOT_SERVING
                name = key_service_name(self._service, signer.key_id)
                self.servicer.set(name, status)
                names.add(name)
            for gone in self._names - names:  # removed by a reload
                self.servicer.set(gone, _NOT_SERVING)
            self._names = names
            overall = _SERVING if serving or len(self._keyring) == 0 else _NOT_SERVING
            for name in ("", self._service):
                self.servicer.set(name, overall)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            for signer in self._keyring:
                if self._stop.is_set():
                    return
                if self._due(signer):
                    self._self_test(signer)

    def _due(self, signer: WalletSigner) -> bool:
        """Failing keys are tested every interval; working ones only when idle that long."""
        return (not signer.health.serving
                or time.monotonic() - signer.health.last_success >= self._interval)

    def _self_test(self, signer: WalletSigner) -> None:
        try:
            signer.self_test(SELF_TEST_TIMEOUT_SECONDS)
        except Exception as exc:
            log.warning("key %r: periodic self-test failed: %s", signer.key_id, exc)
            signer.health.failed()
