"""The JSON-RPC listener: HTTP/1.1 (keep-alive) over the standard library, TLS and mTLS by `ssl`.

    listener = JsonRpcListener(app, config.jsonrpc, server_config=config.server, tls=server.tls)
    listener.start() ... listener.stop()

TLS uses the gRPC server's material (`[server] tls_cert_file`, `tls_key_file`,
`client_ca_file`) and is rebuilt when that material is reloaded (SIGHUP): new connections get
the new context, established ones keep theirs. With a client CA, a client certificate is asked
for (and verified against the CA during the handshake); a caller without one gets HTTP 401, one
whose certificate names no configured client HTTP 403.
"""

import logging
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from signer import metrics
from signer.app.application import Application
from signer.app.caller import Caller
from signer.config import ServerConfig
from signer.errors import ConfigError
from signer.ids import request_id_from
from signer.jsonrpc.config import JsonRpcConfig
from signer.jsonrpc.dispatch import Dispatcher
from signer.jsonrpc.upstream import Upstream
from signer.listen import split_listen
from signer.logs import Fields
from signer.secret_sources import redacted_url
from signer.tls import ReloadableTls, TlsMaterial

log = logging.getLogger(__name__)
access_log = logging.getLogger("signer.access")

REQUEST_ID_HEADER = "x-request-id"
HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 60.0  # a keep-alive connection idle this long is closed
MAX_CONNECTIONS = 512  # each connection holds one thread


class JsonRpcListener:
    """A self-contained JSON-RPC front door: construct (binds), `start`, `stop`, `reload_tls`."""

    def __init__(
        self,
        app: Application,
        config: JsonRpcConfig,
        *,
        server_config: ServerConfig | None = None,
        tls: ReloadableTls | None = None,
        allow_insecure: bool = False,
    ) -> None:
        self.config = config
        self._server_config = server_config
        self._tls_enabled = tls is not None
        if not self._tls_enabled and not config.is_loopback():
            if not allow_insecure:
                raise ConfigError(
                    f"jsonrpc.listen {config.listen} is not a loopback address and TLS is not "
                    "configured: set server.tls_cert_file and server.tls_key_file (the JSON-RPC "
                    "door serves the same certificates), or bind to 127.0.0.1"
                )
            log.warning("INSECURE: JSON-RPC served in plaintext on non-loopback %s", config.listen)
        upstream = (
            Upstream(config.upstream, config.upstream_timeout_seconds)
            if config.upstream else None
        )
        self.dispatcher = Dispatcher(app, app.store, upstream, config.max_batch_size)
        self._context: ssl.SSLContext | None = None
        if tls is not None:
            self._context = self._build_context()
            tls.on_reload(self._on_tls_reload)
        host, port = split_listen(config.listen)
        server_class = _HttpServer6 if ":" in host else _HttpServer
        try:
            self._httpd = server_class((host, port), _Handler, self)
        except OSError as exc:
            raise ConfigError(
                f"jsonrpc.listen: cannot bind {config.listen}: {exc.strerror}"
            ) from None
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None
        self._in_flight = 0
        self._idle = threading.Condition()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        security = "plaintext" if tls is None else ("mTLS" if self.mtls else "TLS")
        log.info("jsonrpc listening on %s (port %d, %s), upstream %s", config.listen, self.port,
                 security, redacted_url(upstream.url) if upstream else "none")

    @property
    def mtls(self) -> bool:
        return self._server_config is not None and self._server_config.client_ca_file is not None

    @property
    def context(self) -> ssl.SSLContext | None:
        return self._context

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name="jsonrpc-accept", daemon=True,
        )
        self._thread.start()

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let requests in progress finish (up to `grace` s), close."""
        self._httpd.shutdown()
        deadline = time.monotonic() + grace
        with self._idle:
            while self._in_flight and time.monotonic() < deadline:
                self._idle.wait(deadline - time.monotonic())
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def reload_tls(self) -> bool:
        """Rebuild the TLS context from the files; on failure keep the current one."""
        if not self._tls_enabled:
            return False
        try:
            self._context = self._build_context()
        except (OSError, ssl.SSLError, ConfigError) as exc:
            log.error("jsonrpc: TLS reload failed, keeping the current context: %s",
                      type(exc).__name__)
            return False
        log.info("jsonrpc: TLS context reloaded")
        return True

    def _on_tls_reload(self, material: TlsMaterial) -> None:
        self.reload_tls()

    def _build_context(self) -> ssl.SSLContext:
        config = self._server_config
        if config is None or config.tls_cert_file is None or config.tls_key_file is None:
            raise ConfigError("jsonrpc: TLS needs server.tls_cert_file and server.tls_key_file")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
        if config.client_ca_file is not None:
            # OPTIONAL, not REQUIRED: a certificate that is sent must verify against the CA
            # (else the handshake fails), and a caller without one gets a readable HTTP 401.
            context.verify_mode = ssl.CERT_OPTIONAL
            context.load_verify_locations(cafile=str(config.client_ca_file))
        return context

    def _enter(self) -> None:
        with self._idle:
            self._in_flight += 1

    def _leave(self) -> None:
        with self._idle:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.notify_all()


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: Any, listener: JsonRpcListener) -> None:
        self.listener = listener
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        context = self.listener.context
        if context is not None:  # the handshake itself runs in the connection's thread
            sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.listener._slots.acquire(blocking=False):
            log.warning("jsonrpc: %d connections open, refusing one more", MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.listener._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # failed handshakes, resets: a line, never a traceback on stderr
        exc = sys.exc_info()[1]
        if isinstance(exc, ssl.SSLError | OSError):
            log.info("jsonrpc: connection from %s closed: %s", client_address[0],
                     getattr(exc, "reason", None) or type(exc).__name__)
        else:
            log.error("jsonrpc: connection fault", exc_info=exc)


class _HttpServer6(_HttpServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "wallet-signer"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    disable_nagle_algorithm = True
    server: _HttpServer

    def setup(self) -> None:
        self.certificate_pem: bytes | None = None
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(HANDSHAKE_TIMEOUT)
            self.request.do_handshake()
            der = self.request.getpeercert(binary_form=True)
            if der:
                self.certificate_pem = ssl.DER_cert_to_PEM_cert(der).encode()
        super().setup()
        host, port = self.client_address[:2]
        self.peer = f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/healthz":
            self._send(200, b"OK\n", "text/plain", "")
        else:
            self._send(404, b"not found: POST JSON-RPC to /, or GET /healthz\n", "text/plain", "")

    def do_POST(self) -> None:
        started = time.perf_counter()
        request_id = request_id_from(self.headers.get(REQUEST_ID_HEADER))
        listener = self.server.listener
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._send(411, _error_body("send the body with a Content-Length"), None, request_id)
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._send(411, _error_body("Content-Length required"), None, request_id)
            return
        limit = listener.config.max_request_bytes
        if length > limit:
            self.close_connection = True  # the body is never read
            message = f"request body of {length} bytes exceeds max_request_bytes ({limit})"
            # counted before the answer leaves: a caller that reads the metrics next sees it
            metrics.refused_call("", "RESOURCE_EXHAUSTED", time.perf_counter() - started)
            self._send(413, _error_body(message), None, request_id)
            self._log("-", request_id, 413, 1, started)
            return
        body = self.rfile.read(length)
        caller = Caller(self.peer, request_id, self.certificate_pem)
        listener._enter()
        try:
            answer = listener.dispatcher.handle(body, caller)
        finally:
            listener._leave()
        self._send(answer.status, answer.body, None, request_id)
        self._log(",".join(answer.methods) or "-", request_id, answer.status, answer.errors,
                  started)

    def _send(self, status: int, body: bytes | None, content_type: str | None,
              request_id: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type or "application/json")
        self.send_header("Content-Length", str(len(body or b"")))
        if request_id:
            self.send_header(REQUEST_ID_HEADER, request_id)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _log(self, methods: str, request_id: str, status: int, errors: int,
             started: float) -> None:
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(Fields(
                "jsonrpc",
                methods=methods[:200],  # caller-supplied names: escaped by the formatter
                peer=self.peer,
                request_id=request_id,
                http=status,
                errors=errors,
                ms=(time.perf_counter() - started) * 1000,
            ))

    def log_message(self, format: str, *args: Any) -> None:
        """http.server's own stderr lines (malformed requests): one debug line instead."""
        log.debug("jsonrpc http: " + format, *args)


def _error_body(message: str) -> bytes:
    import json

    return json.dumps(
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}
    ).encode()
