"""Keys read from AWS Secrets Manager and kept in this process's memory.

The secret's value is a hex key, or a V3 keystore whose password is the value of a second
secret (`password_secret_id`). One botocore client per (region, endpoint, timeouts, attempts),
made once per process and shared (botocore clients are thread-safe); retries in botocore's
`standard` mode, so throttling is retried with backoff before it becomes an error.
"""

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from signer.backends.env import EnvBackend, parse_private_key
from signer.backends.keystore import decrypt_keystore, is_keystore
from signer.config import AwsSecretKeyConfig, AwsSecretSourceConfig
from signer.errors import BackendUnavailable, FailedPrecondition, PermissionDenied

log = logging.getLogger(__name__)

_THROTTLED = frozenset({"ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded",
                        "LimitExceededException"})
_DENIED = frozenset({"AccessDeniedException", "AccessDenied", "UnrecognizedClientException",
                     "InvalidSignatureException", "ExpiredTokenException", "DecryptionFailure",
                     "KMSAccessDeniedException"})
_MISSING = frozenset({"ResourceNotFoundException", "InvalidRequestException"})


@dataclass(frozen=True, slots=True)
class SecretsSettings:
    region: str
    endpoint_url: str | None
    connect_timeout: float
    read_timeout: float
    max_attempts: int

    @classmethod
    def of(cls, config: AwsSecretKeyConfig | AwsSecretSourceConfig) -> "SecretsSettings":
        return cls(config.region, config.endpoint_url, config.connect_timeout_seconds,
                   config.read_timeout_seconds, config.max_attempts)


_clients: dict[SecretsSettings, Any] = {}
_clients_lock = threading.Lock()


def client_for(settings: SecretsSettings) -> Any:
    with _clients_lock:
        client = _clients.get(settings)
        if client is None:
            import boto3
            from botocore.config import Config as BotoConfig

            client = boto3.session.Session().client(
                "secretsmanager", region_name=settings.region, endpoint_url=settings.endpoint_url,
                config=BotoConfig(
                    connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout,
                    retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
                ),
            )
            _clients[settings] = client
        return client


def reset_clients() -> None:
    """Forget the cached clients (tests that restart the emulator)."""
    with _clients_lock:
        _clients.clear()


@contextmanager
def secrets_errors(where: str, doing: str) -> Iterator[None]:
    """botocore's exceptions as the service's errors: the text names the operation and AWS's
    error code, never a secret's value."""
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "unknown"))
        if code in _THROTTLED:
            raise BackendUnavailable(
                f"{where}: {doing}: Secrets Manager throttled the request ({code}) after retries"
            ) from None
        if code in _DENIED:
            raise PermissionDenied(f"{where}: {doing}: Secrets Manager refused access ({code})") \
                from None
        if code in _MISSING:
            raise FailedPrecondition(f"{where}: {doing}: no such secret or version ({code})") \
                from None
        raise BackendUnavailable(f"{where}: {doing}: Secrets Manager error {code}") from None
    except NoCredentialsError:
        raise PermissionDenied(f"{where}: {doing}: no AWS credentials found") from None
    except BotoCoreError as exc:
        raise BackendUnavailable(
            f"{where}: {doing}: Secrets Manager unreachable ({type(exc).__name__})"
        ) from None


def secret_string(client: Any, where: str, secret_id: str, version_stage: str) -> str:
    return secret_version(client, where, secret_id, version_stage)[0]


def secret_version(client: Any, where: str, secret_id: str, version_stage: str,
                   version_id: str | None = None) -> tuple[str, str]:
    """The secret's string and its VersionId: the version `version_id` names, else the one
    `version_stage` is attached to."""
    selector = {"VersionId": version_id} if version_id else {"VersionStage": version_stage}
    with secrets_errors(where, f"reading secret {secret_id!r}"):
        reply = client.get_secret_value(SecretId=secret_id, **selector)
    text = reply.get("SecretString")
    if not isinstance(text, str):
        raise FailedPrecondition(f"{where}: secret {secret_id!r} has no SecretString "
                                 "(binary secrets are not supported)")
    return text, str(reply.get("VersionId", ""))


class AwsSecretBackend(EnvBackend):
    name: ClassVar[str] = "aws-secret"

    def __init__(self, private_key: Any, version_id: str = "") -> None:
        super().__init__(private_key)
        self.version_id = version_id  # the secret version the key was read from

    @classmethod
    def open(cls, key_id: str, config: AwsSecretKeyConfig) -> "AwsSecretBackend":
        return cls.read(f"keys.{key_id}", client_for(SecretsSettings.of(config)),
                        config.secret_id, config.version_stage, config.password_secret_id,
                        config.version_id)

    @classmethod
    def read(cls, where: str, client: Any, secret_id: str, version_stage: str,
             password_secret_id: str | None, version_id: str | None = None
             ) -> "AwsSecretBackend":
        text, read_id = secret_version(client, where, secret_id, version_stage, version_id)
        at = f"{where}: secret {secret_id!r} ({version_id or version_stage})"
        if is_keystore(text):
            if password_secret_id is None:
                raise FailedPrecondition(f"{at} holds a keystore: set password_secret_id")
            password = secret_string(client, where, password_secret_id, "AWSCURRENT").strip()
            return cls(decrypt_keystore(text, password, at), read_id)
        return cls(parse_private_key(text, at), read_id)


def list_secret_names(client: Any, where: str, source: AwsSecretSourceConfig) -> list[str]:
    """Names of the secrets a `[key_sources]` entry selects (prefix and/or tag), sorted."""
    filters: list[dict[str, Any]] = []
    tag_key, _, tag_value = (source.tag or "").partition("=")
    if source.name_prefix:
        filters.append({"Key": "name", "Values": [source.name_prefix]})
    if tag_key:
        filters.append({"Key": "tag-key", "Values": [tag_key]})
    names: list[str] = []
    with secrets_errors(where, "listing secrets"):
        for page in client.get_paginator("list_secrets").paginate(Filters=filters):
            for entry in page.get("SecretList", []):
                name = str(entry["Name"])
                tags = {t["Key"]: t.get("Value", "") for t in entry.get("Tags", [])}
                if source.name_prefix and not name.startswith(source.name_prefix):
                    continue  # AWS's name filter matches words too: keep only true prefixes
                if tag_key and (tag_key not in tags or (tag_value and tags[tag_key] != tag_value)):
                    continue
                names.append(name)
    return sorted(names)
