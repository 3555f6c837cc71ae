"""The service's small error vocabulary.

Every layer below gRPC raises one of these; `signer.grpc.errors` maps each to exactly one status
code. Messages are shown to callers and written to logs, so they must never carry key material,
PINs or credentials.
"""


class SignerError(Exception):
    """Base class: a failure whose message is safe to show to the caller."""


class InvalidRequest(SignerError):
    """The request itself is malformed or asks for something the service will never do."""


class KeyNotFound(SignerError):
    """No key with that key_id is configured."""


class PermissionDenied(SignerError):
    """The backend refused us access (IAM policy, HSM permissions)."""


class FailedPrecondition(SignerError):
    """The key exists but cannot sign in its current state (disabled, pending deletion,
    wrong key spec, or the backend returned a different key than the one configured)."""


class BackendUnavailable(SignerError):
    """A transient backend fault (timeout, throttling, broken session): safe to retry."""


class DeadlineExceeded(SignerError):
    """The caller's deadline ran out before the backend answered."""


class ConfigError(SignerError):
    """The configuration is invalid; raised only at start-up."""
