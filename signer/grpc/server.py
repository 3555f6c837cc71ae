"""Assemble and run the gRPC server: signer service, health checking, reflection."""

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from signer import metrics, pools
from signer.app.application import Application
from signer.config import ServerConfig
from signer.errors import ConfigError
from signer.grpc.health import KeyHealthReporter
from signer.grpc.interceptors import ErrorMappingInterceptor, register_methods
from signer.grpc.servicer import SignerServicer
from signer.grpc.streams import StreamGuard
from signer.tls import ReloadableTls, TlsMaterial
from signer.v1 import signer_pb2, signer_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = signer_pb2.DESCRIPTOR.services_by_name["SignerService"].full_name
# grpc's own size limit sits above max_request_bytes so that the interceptor, not the transport,
# refuses oversized requests (with a request id and a log line); beyond this factor the
# transport cuts them off itself.
TRANSPORT_LIMIT_FACTOR = 4
# SIGTERM: the process ends within shutdown_grace_seconds plus this, whatever is still running.
SHUTDOWN_MARGIN_SECONDS = 3.0
# The health-only listener (`server.health_listen`): enough for probes and a Watch or two.
HEALTH_WORKERS = 2
HEALTH_MAX_CONCURRENT_CALLS = 8
HEALTH_MAX_REQUEST_BYTES = 4096


class SignerServer:
    """A started server. Health stays NOT_SERVING until `mark_ready` (after the self-test)."""

    def __init__(
        self,
        app: Application,
        config: ServerConfig,
        *,
        tls: ReloadableTls | None = None,
        allow_insecure: bool = False,
    ):
        if tls is None and config.tls:
            tls = ReloadableTls(config)
        if tls is None and not config.is_loopback():
            if not allow_insecure:
                raise ConfigError(
                    f"server.listen {config.listen} is not a loopback address and TLS is not "
                    "configured: callers' requests would cross the network in plaintext. Set "
                    "server.tls_cert_file and server.tls_key_file (and client_ca_file for mTLS), "
                    "bind to 127.0.0.1, or pass --insecure-listen if a trusted mesh encrypts "
                    "and authenticates every connection."
                )
            log.warning(
                "INSECURE: --insecure-listen: serving plaintext on non-loopback %s; every "
                "caller that can reach it is trusted", config.listen,
            )
        self.app = app
        self._stopped = False
        self.reload_hooks: list[Callable[[], object]] = []
        self._reload_lock = threading.RLock()  # re-entrant: a SIGHUP handler may run inside another
        self.reload_operator = "SIGHUP"  # who asked for the reload in progress (hooks read it)
        self.keyring = app.keyring
        self.config = config
        self.tls = tls
        for signer in self.keyring:
            signer.require_self_test = True  # refuse to sign until the self-test has passed
        self.health_reporter = KeyHealthReporter(
            self.keyring, SERVICE_NAME, config.health_check_interval_seconds
        )
        self.health = self.health_reporter.servicer
        register_methods(signer_pb2.DESCRIPTOR.services_by_name["SignerService"],
                         health_pb2.DESCRIPTOR.services_by_name["Health"])
        metrics.server_limits(config.max_workers, config.max_concurrent_calls)
        self._workers = pools.start_all(
            metrics.QueueCountingExecutor(config.max_workers, thread_name_prefix="rpc"),
            config.max_workers,
        )
        self._server = grpc.server(
            self._workers,
            interceptors=[ErrorMappingInterceptor(config.max_request_bytes)],
            options=[
                ("grpc.max_receive_message_length",
                 config.max_request_bytes * TRANSPORT_LIMIT_FACTOR),
                ("grpc.so_reuseport", 0),
                # A stream is read only as fast as it is answered; without BDP probing its
                # flow-control window stays at 64 KiB instead of growing to several MiB, so a
                # fast sender cannot make the server buffer much for it.
                ("grpc.http2.bdp_probe", 0),
            ],
            maximum_concurrent_rpcs=config.max_concurrent_calls,
        )
        self.streams = StreamGuard(config.streams_per_client, config.stream_idle_seconds)
        signer_pb2_grpc.add_SignerServiceServicer_to_server(
            SignerServicer(app, self.streams, self.reload), self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        # The health-only listener first: a started grpc server releases its port on stop(),
        # one that was only bound (if the main listener failed) would keep it.
        self._health_server: grpc.Server | None = None
        self.health_port: int | None = None
        if config.health_listen is not None:
            self._health_server, self.health_port = _health_only_server(
                self.health, config.health_listen
            )
        try:
            if tls is None:
                self.port = self._server.add_insecure_port(config.listen)
            else:
                self.port = self._server.add_secure_port(config.listen, _credentials(tls))
        except BaseException:
            if self._health_server is not None:
                self._health_server.stop(0)
            raise
        if self.port == 0:
            raise ConfigError(f"server.listen: cannot bind {config.listen}")
        self._server.start()
        self.streams.start()
        security = "plaintext" if tls is None else ("mTLS" if tls.current.mtls else "TLS")
        log.info("listening on %s (port %d, %s)", config.listen, self.port, security)

    def self_test_and_mark_ready(self) -> None:
        self.keyring.self_test()
        self.health_reporter.start()
        log.info("all %d keys passed their self-test: SERVING", len(self.keyring))

    def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish (up to `grace` seconds), close backends;
        bounded: returns within `grace` plus a few seconds even if a backend call hangs. A
        second call does nothing (the runtime closes what `serve_forever` already stopped)."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.shutdown_grace_seconds if grace is None else grace
        self.health_reporter.stop(timeout=1.0)
        if self._health_server is not None:
            self._health_server.stop(0)
        self._server.stop(grace).wait(grace + 1.0)
        self.streams.stop()
        self._workers.shutdown(wait=False)  # idle workers end now; one stuck in a backend later
        self.keyring.close(timeout=1.0)
        self.app.close()

    def reload(self, operator: str = "SIGHUP") -> bool:
        """Re-read what can change without a restart: TLS files, then whatever the command
        registered in `reload_hooks` (the config's keys, clients and policies). Each keeps the
        old on a bad file. One reload at a time (SIGHUP and the Reload RPC). False if a hook
        returned False (its file did not load)."""
        with self._reload_lock:
            self.reload_operator = operator
            if self.tls is not None:
                self.tls.reload()
            results = [hook() for hook in self.reload_hooks]
        return all(r is not False for r in results)

    def wait(self) -> None:
        self._server.wait_for_termination()


def _health_only_server(servicer: health.HealthServicer, listen: str) -> tuple[grpc.Server, int]:
    """grpc.health.v1 alone, in plaintext, on `listen`: what a prober without a client
    certificate may see is each name's SERVING/NOT_SERVING, nothing else (no signer service,
    no reflection). Small limits: it answers probes, not traffic."""
    server = grpc.server(
        futures.ThreadPoolExecutor(HEALTH_WORKERS, thread_name_prefix="health"),
        options=[("grpc.max_receive_message_length", HEALTH_MAX_REQUEST_BYTES),
                 ("grpc.so_reuseport", 0)],
        maximum_concurrent_rpcs=HEALTH_MAX_CONCURRENT_CALLS,
    )
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError:  # grpc's "Failed to bind": in use, or not an address of this host
        port = 0
    if port == 0:
        raise ConfigError(
            f"server.health_listen: cannot bind {listen} (in use, or not an address of this host)"
        )
    server.start()
    log.info("health checks (grpc.health.v1 only, plaintext) on %s (port %d)", listen, port)
    return server, port


def _credentials(tls: ReloadableTls) -> grpc.ServerCredentials:
    """Credentials that pick up reloaded material at each new handshake; established
    connections keep theirs."""

    def configuration(material: TlsMaterial) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(material.private_key, material.certificate_chain)],
            root_certificates=material.client_ca,
        )

    served = tls.generation

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        nonlocal served
        if tls.generation == served:
            return None  # unchanged
        served = tls.generation
        return configuration(tls.current)

    return grpc.dynamic_ssl_server_credentials(
        configuration(tls.current),
        fetch,  # type: ignore[arg-type]  # grpc takes None for "unchanged"; its stub omits it
        require_client_authentication=tls.current.mtls,
    )


def serve_forever(server: SignerServer) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly; SIGHUP re-reads TLS files (and
    whatever registered a reload hook).

    The handlers only set flags: the reload runs here, in the main loop, never inside a signal
    handler. A SIGHUP that arrived while a reload was writing its audit record used to run a
    second reload inside the first, which then waited for the lock the first one held. SIGHUPs
    that come during a reload are answered by one more reload after it."""
    stopping = threading.Event()
    reload_requested = threading.Event()
    wake = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stopping.is_set():
            _exit_after(server.config.shutdown_grace_seconds + SHUTDOWN_MARGIN_SECONDS)
        log.info("received %s: finishing in-flight calls", signal.Signals(signum).name)
        stopping.set()
        wake.set()

    def on_hangup(signum: int, frame: FrameType | None) -> None:
        reload_requested.set()
        wake.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    try:
        server.self_test_and_mark_ready()
    except BaseException:
        server.stop(0)
        raise
    while not stopping.is_set():
        wake.wait(0.5)  # wake now and then: signal handlers run between waits
        wake.clear()
        if reload_requested.is_set() and not stopping.is_set():
            reload_requested.clear()
            log.info("received SIGHUP: reloading")
            server.reload()
    server.stop()
    log.info("stopped")


def _exit_after(seconds: float) -> None:
    """End the process after `seconds` whatever still runs: a handler blocked in a backend
    keeps its worker thread, which the interpreter would otherwise wait for at exit."""

    def watchdog() -> None:
        time.sleep(seconds)
        try:
            log.error("shutdown did not finish within %.1fs; exiting now", seconds)
        finally:
            os._exit(1)

    threading.Thread(target=watchdog, name="shutdown-watchdog", daemon=True).start()
