"""Cross-cutting work for every call: a request id, error mapping and one access-log line.

The log line carries the method, peer, status and duration; never a payload, key or signature.
"""

import contextvars
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from signer.errors import InvalidRequest, SignerError
from signer.grpc.errors import UNEXPECTED, status_for

log = logging.getLogger("signer.access")

REQUEST_ID_HEADER = "x-request-id"
if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
_MAX_REQUEST_ID = 64

# The request id of the call this thread is serving (set before the handler runs).
_request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


def current_request_id() -> str:
    return _request_id_var.get() or uuid.uuid4().hex


class ErrorMappingInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Turns SignerError into its status; anything else into UNAVAILABLE, logged with trace.

    grpc asks for the handler on every call: the wrapped handler is built once per method.
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, Handler] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], "Handler | None"],
        details: grpc.HandlerCallDetails,
    ) -> "Handler | None":
        wrapped = self._wrapped.get(details.method)
        if wrapped is None:
            handler = continuation(details)
            if handler is None or handler.unary_unary is None:
                return handler
            wrapped = self._wrapped[details.method] = _wrap(details.method, handler)
        return wrapped


def _wrap(method: str, handler: "Handler") -> "Handler":
    inner = handler.unary_unary
    parse = handler.request_deserializer
    assert inner is not None and parse is not None  # generated unary handlers carry both
    what = method.rsplit("/", 1)[-1] + " request"

    def unary_unary(request: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        request_id = _request_id(context.invocation_metadata())
        _request_id_var.set(request_id)
        code = grpc.StatusCode.OK
        message = ""
        try:
            context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
            if isinstance(request, _Undecodable):
                raise InvalidRequest(f"request is not a valid {what} message")
            return inner(request, context)
        except SignerError as exc:
            code, message = status_for(exc), str(exc)
        except Exception:
            log.exception("unexpected fault in %s (request %s)", method, request_id)
            code, message = UNEXPECTED
        finally:
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "%s peer=%s request_id=%s status=%s ms=%.2f",
                    method,
                    context.peer(),
                    request_id,
                    code.name,
                    (time.perf_counter() - started) * 1000,
                )
        context.abort(code, message)

    def deserialize(data: bytes) -> Any:
        # grpc answers INTERNAL when a deserializer raises; bad bytes are the caller's fault.
        try:
            return parse(data)
        except Exception:
            return _UNDECODABLE

    return grpc.unary_unary_rpc_method_handler(
        unary_unary,
        request_deserializer=deserialize,
        response_serializer=handler.response_serializer,
    )


class _Undecodable:
    """Stands in for a request whose bytes did not parse."""


_UNDECODABLE = _Undecodable()


def _request_id(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and value.isprintable():
            return value[:_MAX_REQUEST_ID]
    return uuid.uuid4().hex
