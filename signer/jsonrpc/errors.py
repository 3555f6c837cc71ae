"""The one table from the service's error vocabulary to EIP-1474 JSON-RPC errors.

Unauthenticated callers get an HTTP status instead (401 without a client certificate, 403 with
one that names no client): the door answers them before any method runs.
"""

from signer import errors

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
SERVER_ERROR = -32000  # EIP-1474 "invalid input": unknown `from`, refused key or method
RESOURCE_UNAVAILABLE = -32002  # backend, store or upstream down: retry
TRANSACTION_REJECTED = -32003  # the policy refused exactly this request
METHOD_NOT_SUPPORTED = -32004  # a forwarded method this client may not call ("Forward")
LIMIT_EXCEEDED = -32005

# Most specific class first: the first class in an error's MRO found here decides.
CODE_BY_ERROR: dict[type[errors.SignerError], int] = {
    errors.InvalidRequest: INVALID_PARAMS,
    errors.KeyNotFound: SERVER_ERROR,
    errors.PolicyDenied: TRANSACTION_REJECTED,
    errors.AccessDenied: SERVER_ERROR,
    errors.Unauthenticated: SERVER_ERROR,  # answered with HTTP 401/403 before this is used
    errors.PermissionDenied: RESOURCE_UNAVAILABLE,  # the backend refused us: operator action
    errors.FailedPrecondition: SERVER_ERROR,  # frozen or disabled key
    errors.BackendUnavailable: RESOURCE_UNAVAILABLE,
    errors.DeadlineExceeded: RESOURCE_UNAVAILABLE,
    errors.ResourceExhausted: LIMIT_EXCEEDED,  # e.g. a request over server.max_request_bytes
    errors.ConfigError: SERVER_ERROR,
}

# Raised by nothing we know of: a bug. Logged with its traceback; the caller learns only this.
UNEXPECTED = (RESOURCE_UNAVAILABLE, "signer fault; retry later")


def code_for(error: errors.SignerError) -> int:
    for cls in type(error).__mro__:
        if cls in CODE_BY_ERROR:
            return CODE_BY_ERROR[cls]
    return UNEXPECTED[0]


class JsonRpcError(Exception):
    """An error answered as is: the door's own (-32600, -32601) or the upstream node's."""

    def __init__(self, code: int, message: str, data: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, object]:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error
