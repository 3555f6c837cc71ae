"""The one mapping from the service's error vocabulary to gRPC status codes.

Each `SignerError` names its canonical code (`signer.errors`); gRPC's codes carry the same names.
"""

import grpc

from signer import errors

# A policy denial's fields, sent as trailers beside its PERMISSION_DENIED status (read by
# signer.client.SigningRefused).
POLICY_HEADER, POLICY_RULE_HEADER, POLICY_REASON_HEADER = (
    "x-policy", "x-policy-rule", "x-policy-reason")

# Raised by nothing we know of: a bug. The caller learns nothing was signed and may retry.
UNEXPECTED = (grpc.StatusCode.UNAVAILABLE, "signer fault: nothing was signed; retry later")


def status_for(error: errors.SignerError) -> grpc.StatusCode:
    return grpc.StatusCode[error.code]
