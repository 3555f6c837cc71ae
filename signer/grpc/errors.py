"""The one table from the service's error vocabulary to gRPC status codes."""

import grpc

from signer import errors

STATUS_BY_ERROR: dict[type[errors.SignerError], grpc.StatusCode] = {
    errors.InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    errors.KeyNotFound: grpc.StatusCode.NOT_FOUND,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.BackendUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.ConfigError: grpc.StatusCode.FAILED_PRECONDITION,
}

# Raised by nothing we know of: a bug. The caller learns nothing was signed and may retry.
UNEXPECTED = (grpc.StatusCode.UNAVAILABLE, "signer fault: nothing was signed; retry later")


def status_for(error: errors.SignerError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return UNEXPECTED[0]
