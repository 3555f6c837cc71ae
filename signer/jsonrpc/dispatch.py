"""JSON-RPC 2.0 in, the application path, JSON out: requests, batches, notifications, errors.

Transport-free: `Dispatcher.handle(body, caller)` takes the HTTP body and answers
(HTTP status, response body or None). Signing methods are served here; every other method is
forwarded to the upstream node unchanged and its answer relayed as is.
"""

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from signer import metrics
from signer.app.application import Application
from signer.app.caller import Caller
from signer.errors import InvalidRequest, SignerError, Unauthenticated
from signer.eth import messages, rpc_json
from signer.eth.transactions import UnsignedAuthorization
from signer.jsonrpc import errors as codes
from signer.jsonrpc.errors import JsonRpcError, code_for
from signer.jsonrpc.sending import TransactionService
from signer.jsonrpc.upstream import Upstream
from signer.store import Store

log = logging.getLogger(__name__)

Params = list[Any]
_NO_ID = object()  # a notification: no "id" member at all


@dataclass(frozen=True, slots=True)
class Answer:
    status: int  # HTTP status
    body: bytes | None  # None: nothing to send (notifications only)
    methods: tuple[str, ...]  # for the access log
    errors: int


class Dispatcher:
    def __init__(
        self, app: Application, store: Store, upstream: Upstream | None, max_batch_size: int
    ) -> None:
        self._app = app
        self._upstream = upstream
        self._max_batch = max_batch_size
        self._transactions = TransactionService(app, store, upstream)
        self._methods: dict[str, Callable[[Caller, Params, str], Any]] = {
            "eth_accounts": self._accounts,
            "eth_requestAccounts": self._accounts,
            "eth_sign": self._eth_sign,
            "personal_sign": self._personal_sign,
            "eth_signTypedData_v4": self._sign_typed_data,
            "eth_signTypedData": self._sign_typed_data,
            "eth_signTransaction": self._sign_transaction,
            "eth_sendTransaction": self._send_transaction,
            "wallet_sendTransaction": self._send_transaction,
            "wallet_signAuthorization": self._sign_authorization,
            "health_status": lambda caller, params, method: "OK",
        }
        metrics.register_methods([*(METRIC_PREFIX + m for m in self._methods), FORWARDED])

    @property
    def local_methods(self) -> frozenset[str]:
        return frozenset(self._methods)

    def handle(self, body: bytes, caller: Caller) -> Answer:
        try:
            self._app.access.identify(caller)  # the proxy is for known callers only, too
        except Unauthenticated as exc:
            metrics.refused_call("", "UNAUTHENTICATED", 0.0)
            status = 401 if caller.certificate_pem is None else 403
            return Answer(status, _dump(_error(None, codes.SERVER_ERROR, str(exc))), (), 1)
        try:
            parsed = _parse(body)
        except JsonRpcError as exc:
            metrics.refused_call("", _status_name(exc.code), 0.0)
            return Answer(200, _dump(_error(None, exc.code, exc.message)), (), 1)
        if isinstance(parsed, list):
            return self._batch(parsed, caller)
        response, method = self._one(parsed, caller)
        failed = int(response is not None and "error" in response)
        if response is None:
            return Answer(204, None, (method,), 0)
        return Answer(200, _dump(response), (method,), failed)

    def _batch(self, items: list[Any], caller: Caller) -> Answer:
        if not items:
            metrics.refused_call("", "INVALID_ARGUMENT", 0.0)
            return Answer(200, _dump(_error(None, codes.INVALID_REQUEST, "empty batch")), (), 1)
        if len(items) > self._max_batch:
            message = f"batch of {len(items)} requests exceeds max_batch_size {self._max_batch}"
            metrics.refused_call("", "INVALID_ARGUMENT", 0.0)  # answered as -32600
            return Answer(200, _dump(_error(None, codes.INVALID_REQUEST, message)), (), 1)
        responses = []
        methods = []
        for item in items:
            response, method = self._one(item, caller)
            methods.append(method)
            if response is not None:
                responses.append(response)
        failed = sum(1 for r in responses if "error" in r)
        if not responses:
            return Answer(204, None, tuple(methods), 0)
        return Answer(200, _dump(responses), tuple(methods), failed)

    def _one(self, request: Any, caller: Caller) -> tuple[dict[str, Any] | None, str]:
        """(response or None for a notification, method name for the log). Counted in the
        request metrics like a gRPC call: method `jsonrpc/<method>` (every forwarded method
        as one series), status in the gRPC vocabulary so one alert covers both doors."""
        started = time.perf_counter()
        try:
            request_id, method, params = _envelope(request)
        except JsonRpcError as exc:
            metrics.refused_call("", _status_name(exc.code), time.perf_counter() - started)
            return _error(_id_of(request), exc.code, exc.message), "?"
        handler = self._methods.get(method)
        if handler is not None:
            label = METRIC_PREFIX + method
        else:  # relayed, or (no upstream) not found: never the caller's name
            label = FORWARDED if self._upstream is not None else ""
        call, token = metrics.begin_call(label, "")
        status = "OK"
        try:
            if handler is None:
                return self._forward(request, request_id, method), method
            result = handler(caller, params, method)
            response: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "result": result}
        except JsonRpcError as exc:
            status = _status_name(exc.code)
            response = {"jsonrpc": "2.0", "id": request_id, "error": exc.to_json()}
        except SignerError as exc:
            status = exc.code
            response = _error(request_id, code_for(exc), str(exc))
        except Exception:
            log.exception("unexpected fault in %s (request %s)", method, caller.request_id)
            metrics.SIGNER_FAULTS.labels("jsonrpc").inc()
            status = "UNAVAILABLE"
            response = _error(request_id, *codes.UNEXPECTED)
        finally:
            metrics.end_call(call, token, status, time.perf_counter() - started)
        return (None if request_id is _NO_ID else response), method

    def _forward(self, request: dict[str, Any], request_id: Any, method: str) -> Any:
        if self._upstream is None:
            raise JsonRpcError(
                codes.METHOD_NOT_FOUND,
                f"method {method!r} not found (no upstream node is configured to forward it)",
            )
        reply = self._upstream.forward(request)
        return None if request_id is _NO_ID else reply

    # -- methods --------------------------------------------------------------------------

    def _accounts(self, caller: Caller, params: Params, method: str) -> list[str]:
        _arity(params, method, 0)
        return [status.signer.address for status in self._app.list_keys(caller)]

    def _eth_sign(self, caller: Caller, params: Params, method: str) -> str:
        _arity(params, method, 2)
        return self._sign_message(caller, params[0], params[1], method)

    def _personal_sign(self, caller: Caller, params: Params, method: str) -> str:
        # a third parameter (a password, from old web3.js) is accepted and ignored
        if len(params) not in (2, 3):
            raise InvalidRequest(f"params: {method} takes [data, address], got {len(params)}")
        return self._sign_message(caller, params[1], params[0], method)

    def _sign_message(self, caller: Caller, address: Any, data: Any, method: str) -> str:
        key = rpc_json.address(address, "address")
        message = rpc_json.data(data, "data")
        with self._app.signing(caller, "SignMessage", address=key) as signing:
            signing.note(door="jsonrpc", jsonrpc_method=method)
            signed = signing.sign_message(message, None)
        return rpc_json.to_data(signed.signature)

    def _sign_typed_data(self, caller: Caller, params: Params, method: str) -> str:
        _arity(params, method, 2)
        key = rpc_json.address(params[0], "address")
        typed = params[1]
        if isinstance(typed, dict):
            typed = json.dumps(typed)
        elif not isinstance(typed, str):
            raise InvalidRequest("typedData: expected an object or its JSON string")
        messages.parse_typed_data(typed)  # refuse malformed typed data before the key lookup
        with self._app.signing(caller, "SignTypedData", address=key) as signing:
            signing.note(door="jsonrpc", jsonrpc_method=method)
            signed = signing.sign_typed_data(typed, None)
        return rpc_json.to_data(signed.signature)

    def _sign_transaction(self, caller: Caller, params: Params, method: str) -> str:
        _arity(params, method, 1)
        return self._transactions.sign(caller, rpc_json.transaction_request(params[0]), method)

    def _send_transaction(self, caller: Caller, params: Params, method: str) -> str:
        _arity(params, method, 1)
        return self._transactions.send(caller, rpc_json.transaction_request(params[0]), method)

    def _sign_authorization(self, caller: Caller, params: Params, method: str) -> Any:
        """EIP-7702 for the key at `from`; a missing nonce is the account's pending count
        (right when another account sends the type 4 transaction; the sender itself needs +1)."""
        _arity(params, method, 1)
        request = rpc_json.authorization_request(params[0])
        with self._app.signing(caller, "SignAuthorization", address=request.sender) as signing:
            signing.note(door="jsonrpc", jsonrpc_method=method)
            nonce = request.nonce
            if nonce is None:
                if self._transactions.filler is None:
                    raise InvalidRequest(
                        "nonce: required (no upstream node is configured to read it from)")
                nonce = self._transactions.filler.pending_count(request.sender)
            unsigned = UnsignedAuthorization(request.chain_id, request.address, nonce)
            signed = signing.sign_authorization(unsigned, None)
        return rpc_json.authorization_json(signed)


# -- JSON-RPC 2.0 framing ---------------------------------------------------------------------

MAX_JSON_DEPTH = 64


def _parse(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
        messages.check_json_depth(text, "request", MAX_JSON_DEPTH)
        return json.loads(
            text, object_pairs_hook=messages.no_duplicate_keys,
            parse_constant=messages.no_json_constants, parse_float=_finite_float,
        )
    except UnicodeDecodeError:
        raise JsonRpcError(codes.PARSE_ERROR, "parse error: body is not UTF-8") from None
    except InvalidRequest as exc:
        raise JsonRpcError(codes.PARSE_ERROR, f"parse error: {exc}") from None
    except messages.DuplicateKey as exc:
        message = f"parse error: duplicate key {exc.args[0]!r}"
        raise JsonRpcError(codes.PARSE_ERROR, message) from None
    except _NonFinite as exc:
        message = f"invalid request: the number {exc.args[0]} does not fit a double"
        raise JsonRpcError(codes.INVALID_REQUEST, message) from None
    except (ValueError, RecursionError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise JsonRpcError(codes.PARSE_ERROR, f"parse error: {reason}") from None


class _NonFinite(ValueError):
    pass


def _finite_float(text: str) -> float:
    """json.loads' parse_float: 1e400 would become inf and be answered (or forwarded) as
    `Infinity`, which is not JSON; refuse it instead."""
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(text[:40])
    return value


def _envelope(request: Any) -> tuple[Any, str, Params]:
    if not isinstance(request, dict):
        raise JsonRpcError(codes.INVALID_REQUEST, "invalid request: expected a JSON object")
    if request.get("jsonrpc") != "2.0":
        raise JsonRpcError(codes.INVALID_REQUEST, 'invalid request: jsonrpc must be "2.0"')
    request_id = request.get("id", _NO_ID)
    if request_id is not _NO_ID and (
        isinstance(request_id, bool) or not isinstance(request_id, str | int | float | None)
    ):
        raise JsonRpcError(codes.INVALID_REQUEST, "invalid request: id must be a string or number")
    method = request.get("method")
    if not isinstance(method, str) or not method:
        raise JsonRpcError(codes.INVALID_REQUEST, "invalid request: method must be a string")
    params = request.get("params", [])
    if not isinstance(params, list | dict):
        raise JsonRpcError(codes.INVALID_REQUEST, "invalid request: params must be an array")
    if isinstance(params, dict):
        if params:
            raise JsonRpcError(
                codes.INVALID_PARAMS, f"params: {method[:64]} takes positional params (an array)"
            )
        params = []
    return request_id, method, params


def _id_of(request: Any) -> Any:
    if isinstance(request, dict):
        request_id = request.get("id")
        if isinstance(request_id, str | int) and not isinstance(request_id, bool):
            return request_id
    return None


def _arity(params: Params, method: str, count: int) -> None:
    if len(params) != count:
        raise InvalidRequest(f"params: {method} takes {count} parameters, got {len(params)}")


METRIC_PREFIX = "jsonrpc/"
FORWARDED = METRIC_PREFIX + "(forwarded)"  # one series for every method relayed upstream

# The door's own error codes as the status names gRPC calls carry; an error relayed from the
# upstream node (its own codes) is UPSTREAM_ERROR.
_STATUS_BY_CODE = {
    codes.PARSE_ERROR: "INVALID_ARGUMENT",
    codes.INVALID_REQUEST: "INVALID_ARGUMENT",
    codes.INVALID_PARAMS: "INVALID_ARGUMENT",
    codes.METHOD_NOT_FOUND: "UNIMPLEMENTED",
    codes.RESOURCE_UNAVAILABLE: "UNAVAILABLE",
    codes.LIMIT_EXCEEDED: "RESOURCE_EXHAUSTED",
}


def _status_name(code: int) -> str:
    return _STATUS_BY_CODE.get(code, "UPSTREAM_ERROR")


def _error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": None if request_id is _NO_ID else request_id,
        "error": {"code": code, "message": message},
    }


def _dump(response: Any) -> bytes:
    return json.dumps(response, separators=(",", ":")).encode()
