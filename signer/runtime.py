"""The one place that opens and closes what a serving process runs.

    with Runtime(config, config_path=path) as runtime:
        runtime.start()          # keyring, store, application, metrics, gRPC, reload, JSON-RPC
        runtime.serve_forever()  # self-test, SERVING; SIGTERM/SIGINT stop, SIGHUP reloads

Each part is opened by one method that puts its closing on one ExitStack, so whatever fails,
the parts opened so far close in reverse order and nobody writes a clean-up by hand. `start`
opens every part the config asks for that is not open yet: `wallet-signer serve` calls it
alone; tests and benchmarks first open a part their own way (a keyring of in-memory keys, an
application with their clients or a bench-only audit sink) and let `start` open the rest. A new
part (key reload, rotation) is one more method here and one more line in `start`.

Serving code: this module never imports the operator side (signer.cli, signer.admin).
"""

import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Self

from signer.app.access import AccessControl
from signer.app.application import Application
from signer.app.audit import AuditLog
from signer.app.freeze import FreezeState
from signer.app.sinks import AuditSink
from signer.app.versions import KeyVersions
from signer.config import Config
from signer.grpc.server import SignerServer, serve_forever
from signer.jsonrpc.server import JsonRpcListener
from signer.metrics import MetricsListener
from signer.service import KeyRing
from signer.store import Store, open_store

log = logging.getLogger("signer")
app_log = logging.getLogger("signer.app.application")  # the start-up lines' logger until now

# SignerServer.stop closes the keyring within this (a backend stuck in a call is left behind)
KEYRING_CLOSE_TIMEOUT = 1.0


class Runtime:
    """The parts of one serving process, opened in order and closed in reverse."""

    def __init__(
        self, config: Config, *, config_path: Path | None = None, allow_insecure: bool = False
    ) -> None:
        self.config = config
        self.config_path = config_path  # SIGHUP re-reads it (None: nothing to re-read)
        self.allow_insecure = allow_insecure  # --insecure-listen
        self._stack = ExitStack()
        self._keyring: KeyRing | None = None
        self._app: Application | None = None
        self._grpc: SignerServer | None = None
        self.metrics: MetricsListener | None = None
        self.jsonrpc: JsonRpcListener | None = None
        self._own_audit: AuditLog | None = None  # the chain this runtime opened, if any

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every part opened, the last opened first; a second call does nothing."""
        self._stack.close()

    # -- the parts, in the order `start` opens them -----------------------------------------

    def start(self) -> Self:
        """Open every part not open yet, in order; on failure close what was opened."""
        try:
            if self._keyring is None:
                self.open_keyring()
            if self._app is None:
                self.open_application()
            if self.metrics is None:
                self.start_metrics()
            if self._grpc is None:
                self.start_grpc()
                self.watch_config()
            if self.jsonrpc is None:
                self.start_jsonrpc()
        except BaseException:
            self.close()
            raise
        return self

    def open_keyring(self, keyring: KeyRing | None = None) -> KeyRing:
        """The configured keys, or `keyring` (built by the caller, closed here all the same)."""
        if keyring is None:
            keyring = KeyRing.from_config(self.config)
            if len(keyring) == 0:
                log.warning("no keys configured: every signing request will answer NOT_FOUND")
        self._stack.callback(keyring.close, KEYRING_CLOSE_TIMEOUT)
        self._keyring = keyring
        return keyring

    def open_application(
        self,
        app: Application | None = None,
        *,
        store: Store | None = None,
        access: AccessControl | None = None,
        audit: AuditSink | None = None,
        freeze: FreezeState | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Application:
        """The application path over the keyring: `app` as given, or one over `store` (else
        the configured store, opened and migrated here) with `access` (else the config's
        clients and policies) and `audit` (else this replica's own audit chain, begun now).
        Raises StoreUnavailable when the store cannot be reached. The store closes with the
        runtime, whoever opened it."""
        if app is not None:
            if self._keyring is None:
                self._keyring = app.keyring
                self._stack.callback(app.keyring.close, KEYRING_CLOSE_TIMEOUT)
            self._stack.callback(app.close)
            self._app = app
            return app
        keyring = self.keyring if self._keyring is not None else self.open_keyring()
        opened_store = store is None
        if store is None:
            store = open_store(
                self.config.store.url,
                password_file=self.config.store.password_file,
                connect_timeout=self.config.store.connect_timeout_seconds,
            )
        self._stack.callback(store.close)
        if opened_store:
            store.migrate()
        from_config = access is None
        if access is None:
            access = AccessControl(self.config.clients, self.config.policies)
        if audit is None:
            own_audit = AuditLog(store, key=self.config.store.audit_key())
            audit = own_audit
            # this replica's chain records the other chains' heads every few seconds, and a
            # last time at stop (before the store closes: callbacks run last first)
            self._stack.callback(own_audit.stop)
        else:
            own_audit = None
        # +1: the periodic self-test may sign while every worker does
        versions = KeyVersions(store, max_concurrent_calls=self.config.server.max_workers + 1)
        app = Application(keyring, store, access=access, audit=audit, freeze=freeze,
                          versions=versions, clock=clock)
        self._stack.callback(versions.close)  # the rotated versions it opened
        app.audit.start()
        self._own_audit = own_audit
        self._app = app
        if opened_store:
            app_log.info(
                "state store: %s (schema migrated); audit writer %s", store.url, app.audit.writer
            )
        if from_config and app.access.open:
            app_log.warning(
                "no [clients] configured: every caller may use every key (development mode)"
            )
        return app

    def start_metrics(self) -> MetricsListener | None:
        """The Prometheus listener of `[metrics]`, or None when the table is absent."""
        metrics = self.config.metrics
        if metrics is None:
            return None
        if not metrics.is_loopback():
            log.warning("metrics.listen %s is not a loopback address: anyone who can reach it can "
                        "read the metrics (no secrets, but key ids and load)", metrics.listen)
        self.metrics = MetricsListener(metrics.listen)
        self._stack.callback(self.metrics.close)
        return self.metrics

    def start_grpc(self) -> SignerServer:
        """The gRPC server on `[server] listen`, NOT_SERVING until `serve_forever` (or the
        caller's `self_test_and_mark_ready`); closing it stops it at once (no grace)."""
        app = self.app if self._app is not None else self.open_application()
        server = SignerServer(app, self.config.server, allow_insecure=self.allow_insecure)
        self._stack.callback(server.stop, 0)
        if self._own_audit is not None:  # while serving (the runtime's close stops it)
            self._own_audit.start_witnessing(self.config.store.audit_witness_seconds)
        self._grpc = server
        return server

    def watch_config(self) -> None:
        """SIGHUP (and the Reload RPC) re-read the config file's keys, clients and policies
        (the gRPC server re-reads its TLS files itself, then runs these hooks); nothing
        without a config file."""
        path = self.config_path
        if path is not None:
            app, server = self.app, self.grpc
            self.on_reload(lambda: app.reload_from(path, server.reload_operator))

    def on_reload(self, hook: Callable[[], object]) -> None:
        """Run `hook` at each SIGHUP, after the TLS files (each hook keeps the old on failure)."""
        self.grpc.reload_hooks.append(hook)

    def start_jsonrpc(self) -> JsonRpcListener | None:
        """The JSON-RPC door of `[jsonrpc]` (sharing the gRPC server's TLS), or None."""
        if self.config.jsonrpc is None:
            return None
        listener = JsonRpcListener(self.app, self.config.jsonrpc, server_config=self.config.server,
                                   tls=self.grpc.tls, allow_insecure=self.allow_insecure)
        listener.start()
        self._stack.callback(listener.stop, 0)
        self.jsonrpc = listener
        return listener

    def serve_forever(self) -> None:
        """Self-test every key, mark SERVING, and serve until SIGTERM or SIGINT, then stop the
        gRPC server gracefully; the other parts close when the runtime does."""
        serve_forever(self.grpc)

    # -- the parts once open -----------------------------------------------------------------

    @property
    def keyring(self) -> KeyRing:
        if self._keyring is None:
            raise RuntimeError("Runtime: the keyring is not open")
        return self._keyring

    @property
    def app(self) -> Application:
        if self._app is None:
            raise RuntimeError("Runtime: the application is not open")
        return self._app

    @property
    def grpc(self) -> SignerServer:
        if self._grpc is None:
            raise RuntimeError("Runtime: the gRPC server is not started")
        return self._grpc
