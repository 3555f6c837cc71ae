"""The upstream Ethereum node: JSON-RPC calls for filling and submitting, and raw forwarding.

One keep-alive HTTP connection per serving thread. A node that cannot be reached, times out or
answers something that is not JSON-RPC is `UpstreamUnavailable` (-32002, retryable); a JSON-RPC
error the node returns is relayed to the caller as the node wrote it.
"""

import http.client
import itertools
import json
import logging
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

from signer.errors import BackendUnavailable
from signer.jsonrpc.errors import JsonRpcError

log = logging.getLogger(__name__)

_MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class UpstreamUnavailable(BackendUnavailable):
    """The upstream node is down, slow or answering garbage."""


class Upstream:
    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._path = parts.path or "/"
        if parts.query:
            self._path += "?" + parts.query
        self._timeout = timeout
        self._local = threading.local()
        self._ids = itertools.count(1)
        self._tls = ssl.create_default_context() if self._https else None

    def call(self, method: str, params: list[Any]) -> Any:
        """The node's `result`; its JSON-RPC error is raised as JsonRpcError (relayed as is)."""
        body = json.dumps(
            {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        ).encode()
        reply = self._decode(self.post(body), method)
        if not isinstance(reply, dict) or ("result" not in reply and "error" not in reply):
            raise UpstreamUnavailable(f"upstream node: malformed answer to {method}")
        if "error" in reply:
            error = reply["error"]
            if not isinstance(error, dict) or not isinstance(error.get("code"), int):
                raise UpstreamUnavailable(f"upstream node: malformed error for {method}")
            raise JsonRpcError(error["code"], str(error.get("message", "")), error.get("data"))
        return reply["result"]

    def forward(self, request: dict[str, Any]) -> Any:
        """Send one request object unchanged; the node's response object."""
        return self._decode(self.post(json.dumps(request).encode()), str(request.get("method")))

    def post(self, body: bytes) -> bytes:
        """POST `body`, retrying once on a connection the node closed while it sat idle."""
        for attempt in (1, 2):
            connection = self._connection()
            try:
                connection.request(
                    "POST", self._path, body, {"Content-Type": "application/json"}
                )
                response = connection.getresponse()
                data = response.read(_MAX_RESPONSE_BYTES + 1)
                if response.will_close:
                    self._drop()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop()
                if attempt == 1:
                    continue
                raise self._unavailable(exc) from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise self._unavailable(exc) from None
            if len(data) > _MAX_RESPONSE_BYTES:
                raise UpstreamUnavailable("upstream node: response too large")
            if response.status >= 500 or (response.status != 200 and not data):
                raise UpstreamUnavailable(f"upstream node: HTTP {response.status}")
            return data
        raise AssertionError("unreachable")  # pragma: no cover

    def _decode(self, data: bytes, method: str) -> Any:
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            raise UpstreamUnavailable(f"upstream node: not JSON in answer to {method}") from None

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            if self._tls is not None:
                connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=self._tls
                )
            else:
                connection = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout
                )
            self._local.connection = connection
        return connection

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()

    def _unavailable(self, exc: BaseException) -> UpstreamUnavailable:
        reason = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
        log.warning("upstream %s unreachable: %s", self._host, reason)
        return UpstreamUnavailable(f"upstream node unavailable ({reason}); retry later")
