"""The service's small error vocabulary.

Every layer below the transports raises one of these. Each carries `code`, a canonical status name
(the google.rpc.Code names that gRPC uses), which the audit log records and each door maps once:
`signer.grpc.errors` to a gRPC status, `signer.jsonrpc` to an EIP-1474 error. Messages are shown
to callers and written to logs, so they must never carry key material, PINs or credentials.
"""

from typing import ClassVar


class SignerError(Exception):
    """Base class: a failure whose message is safe to show to the caller."""

    code: ClassVar[str] = "UNAVAILABLE"


class InvalidRequest(SignerError):
    """The request itself is malformed or asks for something the service will never do."""

    code = "INVALID_ARGUMENT"


class KeyNotFound(SignerError):
    """No key with that key_id is configured (or none the caller may use at that address)."""

    code = "NOT_FOUND"


class Unauthenticated(SignerError):
    """The caller is not identified: no client certificate, or one that names no client."""

    code = "UNAUTHENTICATED"


class AccessDenied(SignerError):
    """A known client asked for a key or method it may not use."""

    code = "PERMISSION_DENIED"


class PolicyDenied(AccessDenied):
    """The client's signing policy does not allow exactly this request: which policy, the rule
    that refused it ("" for default deny) and why, each as a field for the doors to pass on."""

    def __init__(self, message: str, *, policy: str = "", rule_id: str = "") -> None:
        super().__init__(message)
        self.policy = policy
        self.rule_id = rule_id

    @property
    def reason(self) -> str:
        """The message without its "policy NAME: " prefix."""
        return str(self).removeprefix(f"policy {self.policy}: ")


class PermissionDenied(SignerError):
    """The backend refused us access (IAM policy, HSM permissions)."""

    code = "PERMISSION_DENIED"


class FailedPrecondition(SignerError):
    """The key exists but cannot sign in its current state (disabled, pending deletion,
    wrong key spec, or the backend returned a different key than the one configured)."""

    code = "FAILED_PRECONDITION"


class KeyFrozen(FailedPrecondition):
    """An operator froze the key (`wallet-signer keys freeze`): it signs nothing until thawed."""


class KeyRetired(FailedPrecondition):
    """The key version was retired (`wallet-signer keys retire`): it never signs again."""


class KeyDraining(FailedPrecondition):
    """A rotated-out key version asked to sign what its `drain` rule does not allow."""


class BackendUnavailable(SignerError):
    """A transient backend fault (timeout, throttling, broken session): safe to retry."""

    code = "UNAVAILABLE"


class StoreUnavailable(BackendUnavailable):
    """The shared state store (audit, freeze, budgets) cannot be read or written: fail closed."""


class DeadlineExceeded(SignerError):
    """The caller's deadline ran out before the backend answered."""

    code = "DEADLINE_EXCEEDED"


class ResourceExhausted(SignerError):
    """The request exceeds a limit of the service (e.g. its size): not worth retrying as is."""

    code = "RESOURCE_EXHAUSTED"


class ConfigError(SignerError):
    """The configuration is invalid; raised only at start-up (and on reload)."""

    code = "FAILED_PRECONDITION"
