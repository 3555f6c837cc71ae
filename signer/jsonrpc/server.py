"""The JSON-RPC listener: HTTP/1.1 (keep-alive) parsed by h11, connections on one asyncio loop,
requests run in a thread pool; TLS and mTLS by `ssl`.

    listener = JsonRpcListener(app, config.jsonrpc, server_config=config.server, tls=server.tls)
    listener.start() ... listener.stop()

TLS uses the gRPC server's material (`[server] tls_cert_file`, `tls_key_file`,
`client_ca_file`) and is rebuilt when that material is reloaded (SIGHUP): new connections get
the new context, established ones keep theirs. With a client CA, the handshake requires a
certificate that verifies against it; a caller whose certificate names no configured client
gets HTTP 403.

Why h11 under our own loop rather than uvicorn, hypercorn or aiohttp: h11 is the HTTP/1.1
state machine those servers use (framing, Content-Length, header limits), while the parts
around it are this door's own: the peer certificate must reach the application path (uvicorn
does not expose it), the TLS context is swapped on SIGHUP for new handshakes, connections are
admitted by peer and by identity, and the application path is synchronous (PKCS#11, KMS,
SQLite), so requests run in threads. An idle or slow connection costs a socket, not a thread.
"""

import asyncio
import json
import logging
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import h11

from signer import metrics
from signer.app.application import Application
from signer.app.caller import Caller
from signer.config import ServerConfig
from signer.errors import ConfigError, Unauthenticated
from signer.ids import request_id_from
from signer.jsonrpc.config import JsonRpcConfig
from signer.jsonrpc.dispatch import Dispatcher
from signer.jsonrpc.http_checks import BLANK_LINE, BrowserGuard, Refused, check_framing, header
from signer.jsonrpc.upstream import Upstream
from signer.listen import split_listen
from signer.logs import Fields
from signer.secret_sources import redacted_url
from signer.tls import ReloadableTls, TlsMaterial

log = logging.getLogger(__name__)
access_log = logging.getLogger("signer.access")

REQUEST_ID_HEADER = "x-request-id"
HANDSHAKE_TIMEOUT = 10.0
MAX_HEADER_BYTES = 16 * 1024  # request line and headers; more is 431
_READ_CHUNK = 64 * 1024
# HTTP refusals in the gRPC status vocabulary of the request metrics
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 405: "INVALID_ARGUMENT", 408: "DEADLINE_EXCEEDED",
                 411: "INVALID_ARGUMENT", 413: "RESOURCE_EXHAUSTED", 431: "RESOURCE_EXHAUSTED"}


@dataclass(eq=False)
class _Connection:
    peer_host: str
    peer: str
    opened: float
    writer: asyncio.StreamWriter | None
    identified: bool = False  # its certificate names a configured client
    busy: bool = False  # a request is being read, run or answered
    certificate_pem: bytes | None = None
    tasks: set["asyncio.Task[Any]"] = field(default_factory=set)


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
        self._app = app
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
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._socket = socket.create_server((host, port), family=family, backlog=512)
        except OSError as exc:
            raise ConfigError(
                f"jsonrpc.listen: cannot bind {config.listen}: {exc.strerror}"
            ) from None
        self._socket.setblocking(False)
        self.port: int = self._socket.getsockname()[1]
        self._executor = ThreadPoolExecutor(config.max_workers, thread_name_prefix="jsonrpc")
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: set[_Connection] = set()
        self._in_flight = 0
        self._idle = threading.Condition()
        self._browsers = BrowserGuard(config.allowed_origins, config.allowed_hosts)
        security = "plaintext" if tls is None else ("mTLS" if self.mtls else "TLS")
        log.info("jsonrpc listening on %s (port %d, %s), upstream %s", config.listen, self.port,
                 security, redacted_url(upstream.url) if upstream else "none")

    @property
    def mtls(self) -> bool:
        return self._server_config is not None and self._server_config.client_ca_file is not None

    @property
    def context(self) -> ssl.SSLContext | None:
        return self._context

    @property
    def connections(self) -> int:
        return len(self._connections)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._acceptor = self._loop.create_task(self._accept_forever())
            self._loop.call_soon(started.set)
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="jsonrpc-loop", daemon=True)
        self._thread.start()
        started.wait(10)

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let requests in progress finish (up to `grace` s), close."""
        if self._thread is None:
            self._socket.close()
            self._executor.shutdown(wait=False)
            return
        if self._acceptor is not None:
            self._loop.call_soon_threadsafe(self._acceptor.cancel)
        deadline = time.monotonic() + grace
        with self._idle:
            while self._in_flight and time.monotonic() < deadline:
                self._idle.wait(deadline - time.monotonic())
        future = asyncio.run_coroutine_threadsafe(self._close_all(), self._loop)
        try:
            future.result(5)
        except Exception:  # stopping: a connection that will not close is dropped
            log.debug("jsonrpc: connections did not all close in time")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._executor.shutdown(wait=False, cancel_futures=True)
        if not self._loop.is_running():
            self._loop.close()

    async def _close_all(self) -> None:
        for connection in list(self._connections):
            if connection.writer is not None:
                _abort(connection.writer)
        tasks = [t for t in (*self._tasks, self._acceptor) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._socket.close()

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
            # REQUIRED: with a client CA nobody without a certificate from it gets past the
            # handshake, whatever [clients] holds (the gRPC door does the same).
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=str(config.client_ca_file))
        return context

    # -- connections ----------------------------------------------------------------------

    async def _accept_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(self._socket)
            except OSError as exc:  # e.g. out of file descriptors: wait, do not spin
                log.warning("jsonrpc: accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            task = loop.create_task(self._accepted(sock, address))
            self._tasks.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(self._tasks.discard)

    async def _accepted(self, sock: socket.socket, address: Any) -> None:
        host, port = str(address[0]), int(address[1])
        peer = f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_HEADER_BYTES, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        connection = _Connection(host, peer, time.monotonic(), None)
        task = asyncio.current_task()
        if task is not None:
            connection.tasks.add(task)
        if not self._admit(connection):
            sock.close()
            return
        self._connections.add(connection)
        finished = False  # served to the end: close gracefully, so the last answer is sent
        try:
            # the handshake (with the context of this moment: a reload serves new connections)
            # counts against the first request's time
            context = self._context
            transport, _ = await asyncio.wait_for(
                loop.connect_accepted_socket(
                    lambda: protocol, sock, ssl=context,
                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT if context else None),
                self.config.request_timeout_seconds,
            )
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            connection.writer = writer
            await self._serve(connection, reader, writer)
            finished = True
        except (ConnectionError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError) as exc:
            log.info("jsonrpc: connection from %s closed: %s", host,
                     getattr(exc, "reason", None) or type(exc).__name__)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("jsonrpc: connection fault")
        finally:
            self._connections.discard(connection)
            if connection.writer is None:
                sock.close()
            elif not finished:
                _abort(connection.writer)
        if finished and connection.writer is not None:
            await _close(connection.writer)

    def _admit(self, newcomer: _Connection) -> bool:
        """Room for `newcomer` under both caps: at a cap, the oldest idle connection whose
        caller is not an identified client makes way; none: the newcomer is refused."""
        config = self.config
        for scope, cap in (
            ([c for c in self._connections if c.peer_host == newcomer.peer_host],
             config.max_connections_per_peer),
            (list(self._connections), config.max_connections),
        ):
            if len(scope) < cap:
                continue
            strangers = sorted((c for c in scope if not c.identified and not c.busy),
                               key=lambda c: c.opened)
            if not strangers:
                log.warning("jsonrpc: %d connections open (cap %d): refusing %s", len(scope),
                            cap, newcomer.peer)
                return False
            evicted = strangers[0]
            self._connections.discard(evicted)
            if evicted.writer is not None:
                _abort(evicted.writer)
            for task in evicted.tasks:
                task.cancel()
            log.info("jsonrpc: connection cap %d reached: closed an idle one from %s", cap,
                     evicted.peer_host)
        return True

    async def _serve(self, connection: _Connection, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        first_deadline = connection.opened + self.config.request_timeout_seconds
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            der = ssl_object.getpeercert(binary_form=True)
            if der:
                connection.certificate_pem = ssl.DER_cert_to_PEM_cert(der).encode()
            connection.identified = self._identified(connection)
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        deadline: float | None = first_deadline
        while True:
            if deadline is None:  # keep-alive: the next request's first byte starts its clock
                if not http.trailing_data[0]:  # (a pipelined request may be here already)
                    data = await asyncio.wait_for(
                        reader.read(_READ_CHUNK), self.config.idle_timeout_seconds)
                    if not data:
                        return
                    http.receive_data(data)
                deadline = time.monotonic() + self.config.request_timeout_seconds
            keep = await self._exchange(connection, http, reader, writer, deadline)
            connection.busy = False
            if not keep:
                return
            http.start_next_cycle()
            deadline = None

    def _identified(self, connection: _Connection) -> bool:
        if connection.certificate_pem is None:
            return False
        try:
            client, _ = self._app.access.identify(
                Caller(connection.peer, "", connection.certificate_pem))
        except Unauthenticated:
            return False
        return client is not None

    async def _exchange(self, connection: _Connection, http: h11.Connection,
                        reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        deadline: float) -> bool:
        """One request and its answer; False: close the connection."""
        started = time.perf_counter()
        head = bytearray(http.trailing_data[0])
        request_id = ""
        try:
            request = await self._next_event(http, reader, deadline, head)
            if request is None:
                return False
            connection.busy = True
            assert isinstance(request, h11.Request)
            request_id = request_id_from(header(request.headers, b"x-request-id"))
            body = await self._request_body(request, http, reader, deadline, bytes(head))
            if request.method == b"GET":
                return await self._get(request, http, writer, request_id)
            answer = await self._run(body, connection, request_id)
            if answer[0] in (401, 403):  # not identified (counted and audited on the path)
                metrics.HTTP_REFUSALS.labels("jsonrpc", str(answer[0])).inc()
                self._log(connection.peer, "-", request_id, answer[0], 1, started,
                          reason=_error_message(answer[1]))
                await self._send(http, writer, answer[0], answer[1], request_id, close=True)
                return False
        except Refused as refusal:
            await self._refuse(refusal, http, writer, connection, request_id, started)
            return False
        except TimeoutError:
            await self._refuse(Refused(408, f"request not received within "
                                       f"{self.config.request_timeout_seconds:g} s"),
                               http, writer, connection, request_id, started)
            return False
        status, payload, methods, errors = answer
        self._log(connection.peer, methods, request_id, status, errors, started)
        await self._send(http, writer, status, payload, request_id, close=False)
        return http.our_state is h11.DONE and http.their_state is h11.DONE

    async def _next_event(self, http: h11.Connection, reader: asyncio.StreamReader,
                          deadline: float, head: bytearray) -> h11.Request | None:
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as exc:
                status = 431 if exc.error_status_hint == 431 else 400
                raise Refused(status, f"malformed request: {exc}") from None
            if event is h11.NEED_DATA:
                data = await _read(reader, deadline)
                if not data:
                    if head:
                        raise Refused(400, "connection closed mid-request")
                    return None
                if len(head) <= MAX_HEADER_BYTES:
                    head += data
                http.receive_data(data)
                continue
            if isinstance(event, h11.ConnectionClosed):
                return None
            if isinstance(event, h11.Request):
                blank = BLANK_LINE.search(head)  # h11 bounds only a head still incomplete
                if blank is None or blank.start() > MAX_HEADER_BYTES:
                    raise Refused(431, f"request line and headers over {MAX_HEADER_BYTES} bytes")
                return event
            raise Refused(400, "malformed request")

    async def _request_body(self, request: h11.Request, http: h11.Connection,
                            reader: asyncio.StreamReader, deadline: float, head: bytes) -> bytes:
        """The framing and browser checks, then the body; Refused for any problem."""
        check_framing(head)
        if request.method == b"GET":
            return b""
        if request.method != b"POST":
            raise Refused(405, f"method {request.method[:16].decode('latin-1')!r}: POST "
                          "JSON-RPC to /, or GET /healthz")
        self._browsers.check(request.headers)
        length_text = header(request.headers, b"content-length")
        if length_text is None:
            raise Refused(411, "Content-Length required")
        length = int(length_text)
        limit = self.config.max_request_bytes
        if length > limit:
            raise Refused(413, f"request body of {length} bytes exceeds max_request_bytes "
                               f"({limit})")
        chunks: list[bytes] = []
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as exc:
                raise Refused(400, f"malformed request: {exc}") from None
            if event is h11.NEED_DATA:
                data = await _read(reader, deadline)
                if not data:
                    raise Refused(400, "connection closed mid-request")
                http.receive_data(data)
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:
                raise Refused(400, "malformed request")

    async def _run(self, body: bytes, connection: _Connection,
                   request_id: str) -> tuple[int, bytes | None, str, int]:
        caller = Caller(connection.peer, request_id, connection.certificate_pem)
        with self._idle:
            self._in_flight += 1
        try:
            answer = await asyncio.get_running_loop().run_in_executor(
                self._executor, self.dispatcher.handle, body, caller)
        finally:
            with self._idle:
                self._in_flight -= 1
                if not self._in_flight:
                    self._idle.notify_all()
        return answer.status, answer.body, ",".join(answer.methods) or "-", answer.errors

    async def _get(self, request: h11.Request, http: h11.Connection,
                   writer: asyncio.StreamWriter, request_id: str) -> bool:
        if request.target.split(b"?", 1)[0] == b"/healthz":
            await self._send(http, writer, 200, b"OK\n", "", close=False,
                             content_type="text/plain")
        else:
            await self._send(http, writer, 404, b"not found: POST JSON-RPC to /, or GET /healthz\n",
                             "", close=False, content_type="text/plain")
        return http.our_state is h11.DONE and http.their_state is h11.DONE

    async def _refuse(self, refusal: Refused, http: h11.Connection, writer: asyncio.StreamWriter,
                      connection: _Connection, request_id: str, started: float) -> None:
        metrics.refused_call("", _STATUS_NAMES.get(refusal.status, "INVALID_ARGUMENT"),
                                 time.perf_counter() - started)
        metrics.HTTP_REFUSALS.labels("jsonrpc", str(refusal.status)).inc()
        self._log(connection.peer, "-", request_id, refusal.status, 1, started,
                  reason=refusal.reason)
        if http.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            try:
                await self._send(http, writer, refusal.status, _error_body(refusal.reason),
                                 request_id, close=True)
            except (ConnectionError, h11.LocalProtocolError, TimeoutError):
                pass

    async def _send(self, http: h11.Connection, writer: asyncio.StreamWriter, status: int,
                    body: bytes | None, request_id: str, *, close: bool,
                    content_type: str = "application/json") -> None:
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body or b""))),
                   ("Server", "wallet-signer")]
        if request_id:
            headers.append((REQUEST_ID_HEADER, request_id))
        if close:
            headers.append(("Connection", "close"))
        data = http.send(h11.Response(status_code=status, headers=headers,
                                      reason=HTTPStatus(status).phrase))
        if body and status not in (204, 304):
            data += http.send(h11.Data(data=body))
        data += http.send(h11.EndOfMessage())
        writer.write(data or b"")
        await asyncio.wait_for(writer.drain(), self.config.request_timeout_seconds)

    def _log(self, peer: str, methods: str, request_id: str, status: int, errors: int,
             started: float, reason: str = "") -> None:
        if access_log.isEnabledFor(logging.INFO):
            fields: dict[str, Any] = {
                "methods": methods[:200],  # caller-supplied names: escaped by the formatter
                "peer": peer,
                "request_id": request_id,
                "http": status,
                "errors": errors,
                "ms": (time.perf_counter() - started) * 1000,
            }
            if reason:
                fields["reason"] = reason[:200]
            access_log.info(Fields("jsonrpc", **fields))


async def _read(reader: asyncio.StreamReader, deadline: float) -> bytes:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    return await asyncio.wait_for(reader.read(_READ_CHUNK), remaining)


async def _close(writer: asyncio.StreamWriter) -> None:
    """Flush what is buffered (the last answer), then close; a peer that does not read gets
    a hard close after 2 s."""
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 2.0)
    except (OSError, ssl.SSLError, TimeoutError, asyncio.CancelledError):
        _abort(writer)


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if transport is not None and not transport.is_closing():
        transport.abort()


def _error_message(body: bytes | None) -> str:
    try:
        return str(json.loads(body or b"{}")["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return "refused"


def _error_body(message: str) -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}
    ).encode()
