"""AWS KMS backend: an ECC_SECG_P256K1 / SIGN_VERIFY key signs each digest with one `Sign` call.

Clients: one botocore client per (region, endpoint, timeouts, attempts, concurrency), created once
per process and shared by every key and thread (botocore clients are thread-safe). Its HTTP
connection pool and its call pool (below) hold `max_concurrent_calls` each: the server passes its
worker count plus one (the periodic self-test), so the server, not this module, bounds how many
KMS calls run at once, and no call queues for a connection.

Retries: botocore's `standard` mode with `total_max_attempts` (attempts, first try included), so
throttling and transient faults are retried with jittered backoff and a per-client retry quota.

Deadlines: botocore has no per-call timeout, and a throttled call can sleep 1 s, 2 s, ... between
attempts, each attempt bounded only by the read timeout. A call with a deadline therefore runs on
a shared pool and the caller waits at most its remaining time (then DeadlineExceeded, which frees
its gRPC worker), while botocore event hooks stop the abandoned call at its next attempt boundary:
no attempt or backoff starts after the deadline, so it outlives the deadline by at most one
in-flight attempt (the read timeout).
"""

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

from botocore.exceptions import BotoCoreError, ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from signer import metrics
from signer.config import KmsKeyConfig
from signer.errors import (
    BackendUnavailable,
    ConfigError,
    DeadlineExceeded,
    FailedPrecondition,
    PermissionDenied,
    SignerError,
)
from signer.eth.signature import SignatureFormat
from signer.pools import start_all

log = logging.getLogger(__name__)

KEY_SPEC = "ECC_SECG_P256K1"
KEY_USAGE = "SIGN_VERIFY"
SIGNING_ALGORITHM = "ECDSA_SHA_256"
# Simultaneous calls per client (threads of its call pool, HTTP connections) when the opener
# does not say: the default server.max_workers (32) plus one for the periodic self-test.
DEFAULT_MAX_CONCURRENT_CALLS = 33


@dataclass(frozen=True, slots=True)
class ClientSettings:
    region: str
    endpoint_url: str | None
    connect_timeout: float
    read_timeout: float
    max_attempts: int
    max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS

    @classmethod
    def from_config(
        cls, config: KmsKeyConfig, max_concurrent_calls: int | None = None
    ) -> "ClientSettings":
        return cls(
            config.region, config.endpoint_url, config.connect_timeout_seconds,
            config.read_timeout_seconds, config.max_attempts,
            max_concurrent_calls or DEFAULT_MAX_CONCURRENT_CALLS,
        )


class KmsBackend:
    name: ClassVar[str] = "kms"
    signature_format: ClassVar[SignatureFormat] = "der"

    def __init__(self, key_id: str, client: Any, key_arn: str, public_key: bytes,
                 call_pool: ThreadPoolExecutor | None = None) -> None:
        self._key_id = key_id
        self._client = client
        self._call_pool = call_pool or shared_call_pool(DEFAULT_MAX_CONCURRENT_CALLS)
        # Sign by the key the address was derived from, not the alias: re-pointing an alias
        # while we run must not silently switch keys.
        self._key_arn = key_arn
        self._public_key = public_key

    @classmethod
    def open(cls, key_id: str, config: KmsKeyConfig,
             max_concurrent_calls: int | None = None) -> "KmsBackend":
        """GetPublicKey once, refuse keys Ethereum cannot use; errors name keys.<key_id>."""
        settings = ClientSettings.from_config(config, max_concurrent_calls)
        client = shared_client(settings)
        try:
            reply = client.get_public_key(KeyId=config.kms_key_id)
        except (BotoCoreError, ClientError) as exc:
            error = translate(exc, key_id, "GetPublicKey")
            raise type(error)(f"keys.{key_id} ({config.kms_key_id}): {error}") from None
        key_arn, public_key = parse_public_key_reply(reply, f"keys.{key_id} ({config.kms_key_id})")
        return cls(key_id, client, key_arn, public_key,
                   shared_call_pool(settings.max_concurrent_calls))

    @property
    def public_key(self) -> bytes:
        return self._public_key

    @property
    def key_arn(self) -> str:
        """The key every Sign call names (as GetPublicKey reported it)."""
        return self._key_arn

    def sign_digest(self, digest: bytes, timeout: float | None) -> bytes:
        if timeout is None:  # the servicer turns grpc's "no deadline" into None
            return self._sign(digest, None)
        deadline = time.monotonic() + timeout
        if timeout <= 0:
            raise self._deadline_exceeded(timeout, sent=False)
        future = self._call_pool.submit(self._sign, digest, deadline)
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            # still queued: never sent; running: the hooks stop it at its next attempt
            sent = not future.cancel()
            raise self._deadline_exceeded(timeout, sent=sent) from None

    def close(self) -> None:
        pass  # the client is shared by every key of the process

    def _sign(self, digest: bytes, deadline: float | None) -> bytes:
        _deadline.at = deadline
        _deadline.attempts = 0
        try:
            reply = self._client.sign(
                KeyId=self._key_arn,
                Message=digest,
                MessageType="DIGEST",
                SigningAlgorithm=SIGNING_ALGORITHM,
            )
        except _DeadlinePassed:
            raise self._deadline_exceeded(None, sent=True) from None
        except (BotoCoreError, ClientError) as exc:
            raise translate(exc, self._key_id, "Sign") from None
        finally:
            _deadline.at = None
            if _deadline.attempts > 1:
                metrics.KMS_RETRIES.labels(self._key_id).inc(_deadline.attempts - 1)
        retries = reply.get("ResponseMetadata", {}).get("RetryAttempts", 0)
        if retries:
            log.info("key %r: KMS Sign succeeded after %d retries", self._key_id, retries)
        return bytes(reply["Signature"])

    def _deadline_exceeded(self, timeout: float | None, *, sent: bool) -> DeadlineExceeded:
        budget = "" if timeout is None else f" ({max(timeout, 0):.3f}s)"
        # An attempt already sent cannot be called back: KMS may still sign it. What is true
        # is that this request returns no signature, and none made later is ever released.
        outcome = (
            "the call was abandoned: KMS may still complete it, but no signature is returned "
            "for this request"
            if sent
            else "nothing was sent to KMS"
        )
        return DeadlineExceeded(
            f"key {self._key_id!r}: KMS did not sign within the caller's deadline{budget}; "
            f"{outcome}"
        )

    def __repr__(self) -> str:
        return f"KmsBackend({self._key_id!r}, {self._key_arn})"


def parse_public_key_reply(reply: dict[str, Any], where: str) -> tuple[str, bytes]:
    """(key ARN, 65-byte SEC1 point) from GetPublicKey, or ConfigError naming what is wrong."""
    # KeySpec is the current field; CustomerMasterKeySpec the deprecated one some emulators send.
    spec = reply.get("KeySpec") or reply.get("CustomerMasterKeySpec")
    usage = reply.get("KeyUsage")
    if spec != KEY_SPEC or usage != KEY_USAGE:
        raise ConfigError(
            f"{where}: KMS key has key spec {spec} and usage {usage}; Ethereum signing needs "
            f"{KEY_SPEC} with {KEY_USAGE} (create one: wallet-signer keys create --backend kms)"
        )
    algorithms = reply.get("SigningAlgorithms") or [SIGNING_ALGORITHM]
    if SIGNING_ALGORITHM not in algorithms:
        raise ConfigError(f"{where}: KMS key does not offer {SIGNING_ALGORITHM}")
    return str(reply["KeyId"]), sec1_from_der(bytes(reply["PublicKey"]), where)


def sec1_from_der(der: bytes, where: str) -> bytes:
    """The uncompressed point of a DER SubjectPublicKeyInfo holding a secp256k1 key."""
    try:
        key = serialization.load_der_public_key(der)
    except ValueError:
        raise ConfigError(f"{where}: KMS returned a public key that is not valid DER") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256k1":
        raise ConfigError(f"{where}: KMS returned a public key that is not on secp256k1")
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


# --- error translation -------------------------------------------------------------------------

_THROTTLED = {"ThrottlingException", "Throttling", "ThrottledException", "RequestLimitExceeded",
              "TooManyRequestsException"}
_TRANSIENT = {"KMSInternalException", "DependencyTimeoutException", "KeyUnavailableException",
              "ServiceUnavailable", "ServiceUnavailableException", "InternalFailure",
              "InternalError", "RequestTimeout", "RequestTimeoutException"}
_BAD_CREDENTIALS = {"UnrecognizedClientException", "InvalidSignatureException",
                    "IncompleteSignature", "ExpiredTokenException", "InvalidClientTokenId",
                    "MissingAuthenticationToken", "InvalidAccessKeyId"}
_KEY_STATE_ADVICE = {
    "DisabledException": "the KMS key is disabled; enable it (kms:EnableKey) or configure "
                         "another key",
    "KMSInvalidStateException": "the KMS key's state does not allow this (pending deletion? "
                                "cancel it with kms:CancelKeyDeletion and re-enable the key)",
    "NotFoundException": "the KMS key does not exist in this account and region",
    "InvalidKeyUsageException": f"the KMS key is not a {KEY_USAGE} key for {SIGNING_ALGORITHM}",
    # ImportKeyMaterial (`keys import --backend kms`)
    "InvalidImportTokenException": "the import token is not this key's; run the import again",
    "ExpiredImportTokenException": "the import token expired (they last 24 hours); run the "
                                   "import again",
    "IncorrectKeyMaterialException": "KMS refused the key material (not a secp256k1 PKCS#8 "
                                     "key, or the key already holds other key material)",
    "InvalidCiphertextException": "KMS could not unwrap the key material with the import's "
                                  "wrapping key",
}


def translate(exc: BotoCoreError | ClientError, key_id: str, operation: str) -> SignerError:
    """One botocore failure as the service's error; AWS's own text goes to the log only
    (it can name the account and role, which callers need not see)."""
    what = f"key {key_id!r}: KMS {operation}"
    if isinstance(exc, ClientError):
        return _translate_client_error(exc, what, operation)
    log.warning("%s failed: %s", what, exc)
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return PermissionDenied(
            f"{what}: no usable AWS credentials ({name}); provide them through the standard "
            "chain (environment, shared profile, instance or container role)"
        )
    if name == "NoRegionError":
        return ConfigError(f"{what}: no AWS region configured")
    # timeouts, refused or reset connections, DNS: retried by botocore, still failing
    return BackendUnavailable(f"{what} failed: KMS endpoint unreachable or timed out ({name}); "
                              "retry later")


def _translate_client_error(exc: ClientError, what: str, operation: str) -> SignerError:
    error = exc.response.get("Error", {})
    meta = exc.response.get("ResponseMetadata", {})
    code = str(error.get("Code", "Unknown"))
    status = int(meta.get("HTTPStatusCode", 0))
    attempts = 1 + int(meta.get("RetryAttempts", 0))
    log.warning("%s failed after %d attempt(s): %s (HTTP %d): %s",
                what, attempts, code, status, error.get("Message", ""))
    tried = f"after {attempts} attempt{'s' if attempts > 1 else ''}"
    if code in _THROTTLED:
        return BackendUnavailable(
            f"{what} throttled {tried} ({code}): the ECC signing request quota is shared by the "
            "account in this region; retry later or request a quota increase"
        )
    if code in _TRANSIENT or status >= 500:
        return BackendUnavailable(f"{what} failed {tried}: AWS-side fault ({code}); retry later")
    if code in ("AccessDeniedException", "AccessDenied"):
        return PermissionDenied(
            f"{what} denied ({code}): allow kms:{operation} on this key for the service's IAM "
            "principal (key policy and IAM policy); details in the service log"
        )
    if code in _BAD_CREDENTIALS:
        return PermissionDenied(
            f"{what}: AWS rejected the service's credentials ({code}); check the credential chain"
        )
    advice = _KEY_STATE_ADVICE.get(code, "the request was refused; details in the service log")
    return FailedPrecondition(f"{what} failed ({code}): {advice}")


# --- shared clients, call pool and deadline hooks ------------------------------------------------

_clients: dict[ClientSettings, Any] = {}
_clients_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}
# .at: monotonic deadline of the Sign call on this thread, or None; .attempts: HTTP sends
_deadline = threading.local()


class _DeadlinePassed(Exception):
    """Raised from a botocore hook to stop a call whose caller has given up."""


def shared_client(settings: ClientSettings) -> Any:
    """The process's client for these settings (created on first use)."""
    with _clients_lock:
        client = _clients.get(settings)
        if client is None:
            client = _clients[settings] = _new_client(settings)
        return client


def reset_clients() -> None:
    """Forget every shared client, so the next key opened gets a new one (tests: each client
    carries a retry quota that injected faults drain). Open backends keep theirs."""
    with _clients_lock:
        _clients.clear()


def _new_client(settings: ClientSettings) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
        max_pool_connections=settings.max_concurrent_calls,
        user_agent_extra="wallet-signer",
    )
    # A private Session: boto3's default session is not safe to share across threads.
    client = boto3.session.Session().client(
        "kms", region_name=settings.region, endpoint_url=settings.endpoint_url, config=config
    )
    # The more specific `needs-retry.kms.Sign` runs before botocore's own `needs-retry.kms`
    # handler, so a call past its deadline stops instead of backing off and retrying.
    client.meta.events.register("before-send.kms.Sign", _stop_after_deadline)
    client.meta.events.register("needs-retry.kms.Sign", _stop_after_deadline)
    return client


def _stop_after_deadline(event_name: str = "", **kwargs: Any) -> None:
    if event_name.startswith("before-send"):
        _deadline.attempts = getattr(_deadline, "attempts", 0) + 1
    deadline = getattr(_deadline, "at", None)
    if deadline is not None and time.monotonic() >= deadline:
        raise _DeadlinePassed


def shared_call_pool(size: int) -> ThreadPoolExecutor:
    """The pool that runs calls with a deadline: one per size, its threads all started."""
    with _clients_lock:
        pool = _pools.get(size)
        if pool is None:
            pool = _pools[size] = start_all(ThreadPoolExecutor(size, thread_name_prefix="kms"),
                                            size)
        return pool
