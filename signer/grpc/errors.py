"""The one mapping from the service's error vocabulary to gRPC status codes.

Each `SignerError` names its canonical code (`signer.errors`); gRPC's codes carry the same names.
"""

import grpc

from signer import errors

# Raised by nothing we know of: a bug. The caller learns nothing was signed and may retry.
UNEXPECTED = (grpc.StatusCode.UNAVAILABLE, "signer fault: nothing was signed; retry later")


def status_for(error: errors.SignerError) -> grpc.StatusCode:
    return grpc.StatusCode[error.code]
