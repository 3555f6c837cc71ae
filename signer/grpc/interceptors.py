"""Cross-cutting work for every call: a request id, error mapping, metrics and one access-log
line.

The log line carries the method, peer, key id, status and duration (for a stream: how many
messages it answered and with which statuses); never a payload, key or signature.
"""

import contextvars
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from signer import metrics
from signer.errors import InvalidRequest, PolicyDenied, ResourceExhausted, SignerError
from signer.grpc.errors import (
    POLICY_HEADER,
    POLICY_REASON_HEADER,
    POLICY_RULE_HEADER,
    UNEXPECTED,
    status_for,
)
from signer.ids import new_id, request_id_from
from signer.logs import Fields

log = logging.getLogger("signer.access")

REQUEST_ID_HEADER = "x-request-id"

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]

# The request id and peer of the call this thread is serving (set before the handler runs;
# the peer is read from grpc once a call: each read is a call into grpc's core).
_call_var: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar(
    "call", default=("", "")
)

Request = TypeVar("Request")
Answer = TypeVar("Answer")


def current_call() -> tuple[str, str]:
    """(request id, peer) of the call being served; a fresh id outside of one."""
    request_id, peer = _call_var.get()
    return request_id or new_id(), peer


def register_methods(*services: Any) -> None:
    """Method label values for metrics: the methods of these service descriptors."""
    metrics.register_methods(f"{svc.full_name}/{m.name}" for svc in services for m in svc.methods)


class ErrorMappingInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Turns SignerError into its status; anything else into UNAVAILABLE, logged with trace.

    Unary calls and bidirectional streams are wrapped; a stream's messages are each answered
    with their own status by `answer_each`. grpc asks for the handler on every call: the wrapped
    handler is built once per method. `max_request_bytes` (per message) is enforced here, not
    by grpc's transport (whose limit the server sets higher), so an oversized request is
    answered like any other error: with its request id trailer, an access-log line and metrics.
    """

    def __init__(self, max_request_bytes: int | None = None) -> None:
        self._wrapped: dict[str, Handler] = {}
        self._max_request_bytes = max_request_bytes

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], "Handler | None"],
        details: grpc.HandlerCallDetails,
    ) -> "Handler | None":
        wrapped = self._wrapped.get(details.method)
        if wrapped is None:
            handler = continuation(details)
            if handler is None:
                return None
            if handler.unary_unary is not None:
                wrapped = _wrap(details.method, handler, self._max_request_bytes)
            elif handler.stream_stream is not None:
                wrapped = _wrap_stream(details.method, handler, self._max_request_bytes)
            else:
                return handler  # health's Watch (server streaming): nothing of ours to map
            self._wrapped[details.method] = wrapped
        return wrapped


def _wrap(method: str, handler: "Handler", max_request_bytes: int | None) -> "Handler":
    inner = handler.unary_unary
    parse = handler.request_deserializer
    assert inner is not None and parse is not None  # generated unary handlers carry both
    what = method.rsplit("/", 1)[-1] + " request"
    label = method.lstrip("/")

    def unary_unary(request: Any, context: grpc.ServicerContext) -> Any:
        started = time.perf_counter()
        request_id = _request_id(context.invocation_metadata())
        peer = context.peer()
        _call_var.set((request_id, peer))
        call, token = metrics.begin_call(label, getattr(request, "key_id", ""))
        code = grpc.StatusCode.OK
        message = ""
        try:
            context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
            if isinstance(request, _Refused):
                raise request.error(what)
            return inner(request, context)
        except Exception as exc:
            code, message = _status_of(exc, method, request_id)
            if isinstance(exc, PolicyDenied):
                context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),
                                               *_policy_trailers(exc)))
        finally:
            seconds = time.perf_counter() - started
            metrics.end_call(call, token, code.name, seconds)
            if log.isEnabledFor(logging.INFO):
                log.info(Fields(
                    method,
                    peer=peer,
                    key_id=call.key_id,
                    client=call.client,
                    request_id=request_id,
                    status=code.name,
                    ms=seconds * 1000,
                ))
        context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(
        unary_unary,
        request_deserializer=_lenient(parse, max_request_bytes),
        response_serializer=handler.response_serializer,
    )


def _wrap_stream(method: str, handler: "Handler", max_request_bytes: int | None) -> "Handler":
    inner = handler.stream_stream
    parse = handler.request_deserializer
    assert inner is not None and parse is not None
    what = _what(parse)
    label = method.lstrip("/")

    def stream_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        started = time.perf_counter()
        request_id = _request_id(context.invocation_metadata())
        peer = context.peer()
        _call_var.set((request_id, peer))
        call, token = metrics.begin_call(label, "")
        messages = _Messages(requests, what, method, request_id)
        code = grpc.StatusCode.OK
        message = ""
        try:
            context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
            yield from inner(messages, context)
            if not context.is_active():  # the request iterator may just end when the call does
                code = _ended_by_caller(context)
        except grpc.RpcError:
            # grpc's request iterator raises this when the caller cancels or the deadline passes
            code = _ended_by_caller(context)
        except GeneratorExit:
            code = _ended_by_caller(context)
            raise
        except Exception as exc:
            code, message = _status_of(exc, method, request_id)
        finally:
            seconds = time.perf_counter() - started
            metrics.end_call(call, token, code.name, seconds)
            if log.isEnabledFor(logging.INFO):
                log.info(Fields(
                    method,
                    peer=peer,
                    client=call.client,
                    request_id=request_id,
                    status=code.name,
                    ms=seconds * 1000,
                    messages=messages.count,
                    answers=",".join(f"{c.name}:{n}" for c, n in messages.answers.items()) or "-",
                ))
        if code is not grpc.StatusCode.OK and context.is_active():
            context.abort(code, message)

    return grpc.stream_stream_rpc_method_handler(
        stream_stream,
        request_deserializer=_lenient(parse, max_request_bytes),
        response_serializer=handler.response_serializer,
    )


@dataclass(frozen=True, slots=True)
class Refusal:
    """One stream message's error status; the stream itself goes on."""

    code: grpc.StatusCode
    message: str


def answer_each(
    requests: Iterable[Request], answer: Callable[[int, Request], Answer]
) -> Iterator[tuple[int, "Answer | Refusal"]]:
    """(index, answer(index, request) or Refusal) for each request in order, mapping errors per
    message with the same table and the same undecodable-bytes check as unary calls.

    Lazy: the next request is read only after the previous one is answered and its reply taken,
    so one stream holds at most one request in the server (plus grpc's flow-control window).
    """
    messages = requests if isinstance(requests, _Messages) else None
    for index, request in enumerate(requests):
        outcome: Answer | Refusal
        try:
            if isinstance(request, _Refused):
                assert messages is not None  # only our deserializer makes these
                raise request.error(messages.what)
            outcome = answer(index, request)
            code = grpc.StatusCode.OK
        except Exception as exc:
            if messages is None:
                raise
            request_id = message_request_id(messages.request_id, index)
            code, text = _status_of(exc, messages.method, request_id)
            outcome = Refusal(code, text)
        if messages is not None:
            messages.answers[code] += 1
            metrics.stream_message(messages.method.lstrip("/"), code.name,
                                   getattr(request, "key_id", ""))
        yield index, outcome


def message_request_id(stream_request_id: str, index: int) -> str:
    """A stream message's own request id (audit records, logs): the stream's, then /index."""
    return f"{stream_request_id}/{index}"


class _Messages:
    """A stream's request iterator that knows its call, for per-message errors and the log."""

    __slots__ = ("_requests", "answers", "count", "method", "request_id", "waiting_since", "what")

    def __init__(self, requests: Iterator[Any], what: str, method: str, request_id: str) -> None:
        self._requests = requests
        self.what = what
        self.method = method
        self.request_id = request_id
        self.count = 0
        self.answers: Counter[grpc.StatusCode] = Counter()
        # since when the server has been waiting for the caller's next message (None while
        # it answers one): what signer.grpc.streams cancels an idle stream by
        self.waiting_since: float | None = None

    def __iter__(self) -> "_Messages":
        return self

    def __next__(self) -> Any:
        self.waiting_since = time.monotonic()
        try:
            request = next(self._requests)
        finally:
            self.waiting_since = None
        self.count += 1
        return request


def _status_of(exc: Exception, method: str, request_id: str) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, SignerError):
        # grpc sends details as UTF-8: a lone surrogate in caller text quoted by a message
        # would make grpc core fail the call with its own exception text
        return status_for(exc), str(exc).encode("utf-8", "backslashreplace").decode("utf-8")
    log.exception("unexpected fault in %s (request %r)", method, request_id)
    metrics.SIGNER_FAULTS.labels("grpc").inc()
    return UNEXPECTED


def _policy_trailers(denied: PolicyDenied) -> tuple[tuple[str, str], ...]:
    """Metadata values are printable ASCII: anything else in a reason is escaped."""
    def ascii_text(text: str) -> str:
        return "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode("ascii")
                       for c in text)

    return ((POLICY_HEADER, ascii_text(denied.policy)),
            (POLICY_RULE_HEADER, ascii_text(denied.rule_id)),
            (POLICY_REASON_HEADER, ascii_text(denied.reason)[:4096]))


def _ended_by_caller(context: grpc.ServicerContext) -> grpc.StatusCode:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def _lenient(parse: Callable[[bytes], Any], max_bytes: int | None) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        if max_bytes is not None and len(data) > max_bytes:
            return _TooLarge(len(data), max_bytes)
        try:  # grpc answers INTERNAL when a deserializer raises; bad bytes are the caller's fault
            return parse(data)
        except Exception:
            return _UNDECODABLE

    return deserialize


def _what(parse: Callable[[bytes], Any]) -> str:
    """"SignTransaction request" for a stream of SignTransactionRequest: the words unary
    SignTransaction uses for the same message."""
    name: str = parse.__self__.DESCRIPTOR.name  # type: ignore[attr-defined]  # Message.FromString
    return name.removesuffix("Request") + " request"


class _Refused:
    """Stands in for a request refused before parsing; `error` says why."""

    def error(self, what: str) -> SignerError:
        return InvalidRequest(f"request is not a valid {what} message")


class _TooLarge(_Refused):
    def __init__(self, size: int, limit: int) -> None:
        self.size, self.limit = size, limit

    def error(self, what: str) -> SignerError:
        return ResourceExhausted(
            f"{what} is {self.size} bytes, more than the server's limit of {self.limit} "
            "(server.max_request_bytes)"
        )


_UNDECODABLE = _Refused()


def _request_id(metadata: Any) -> str:
    """The caller's x-request-id (signer.ids.request_id_from), else a new one. Logs
    escape it (signer.logs), so even spaces or quotes in it cannot forge a field."""
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str):
            return request_id_from(value)
    return new_id()
