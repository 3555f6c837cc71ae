"""Keys read from a HashiCorp Vault / OpenBao KV v2 secret and kept in this process's memory.

Neither Vault's nor OpenBao's Transit engine signs with secp256k1, so the key itself is stored
in KV and decrypted into the process (like `env` and `keystore`). The field holds a hex key, or
a V3 keystore whose password is in `password_field` of the same secret.

One `VaultSession` per distinct login (url, method, credentials files, namespace) is shared by
every key that uses it, and owns one renewer thread: the thread count is fixed by the config,
not by the number of keys or renewals. The renewer renews the token at two thirds of its TTL,
and logs in again (AppRole, Kubernetes) or re-reads the token file when the token cannot be
renewed any further (max TTL reached, or not renewable).
"""

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from signer.backends.env import EnvBackend, parse_private_key
from signer.backends.keystore import decrypt_keystore
from signer.config import VaultAuth, VaultKeyConfig
from signer.errors import (
    BackendUnavailable,
    ConfigError,
    FailedPrecondition,
    PermissionDenied,
    SignerError,
)
from signer.secret_sources import read_secret

log = logging.getLogger(__name__)

# Renew when this share of the token's TTL has passed; retry a failed renewal this often.
RENEW_AT = 2 / 3
RETRY_SECONDS = 5.0
MIN_DELAY_SECONDS = 0.2
MIN_TTL_SECONDS = 1.0


class VaultSession:
    """A logged-in hvac client and the thread that keeps its token alive."""

    def __init__(self, auth: VaultAuth, where: str) -> None:
        try:
            import hvac
        except ImportError:
            raise ConfigError(
                f"{where}: backend vault needs hvac: pip install 'wallet-signer[vault]'"
            ) from None
        self.auth = auth
        self.where = where
        self._lock = threading.RLock()
        self._client = hvac.Client(
            url=auth.url, verify=str(auth.ca_file) if auth.ca_file else True,
            timeout=auth.timeout_seconds, namespace=auth.namespace,
        )
        self._users = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ttl = 0.0  # seconds the current token had left when last looked up; 0: no expiry
        self.renewals = 0
        self.logins = 0
        self._login()

    # --- log in and renew ------------------------------------------------------------------

    def _login(self) -> None:
        auth = self.auth
        with self._lock, vault_errors(self.where, f"{auth.login} login to {auth.url}", login=True):
            if auth.token_file is not None:
                self._client.token = read_secret(self.where, "Vault token", None, auth.token_file)
            elif auth.role_id_file is not None:
                role_id = read_secret(self.where, "AppRole role_id", None, auth.role_id_file)
                secret_id = read_secret(self.where, "AppRole secret_id", None,
                                        auth.secret_id_file)
                self._client.auth.approle.login(role_id=role_id, secret_id=secret_id,
                                                mount_point=auth.approle_mount)
            else:
                jwt = read_secret(self.where, "Kubernetes service account token", None,
                                  auth.kubernetes_jwt_file)
                self._client.auth.kubernetes.login(role=auth.kubernetes_role, jwt=jwt,
                                                   mount_point=auth.kubernetes_mount)
            self.logins += 1
            self._look_up()

    def _look_up(self) -> dict[str, Any]:
        data: dict[str, Any] = self._client.auth.token.lookup_self()["data"]
        self.ttl = float(data.get("ttl") or 0)
        self._renewable = bool(data.get("renewable"))
        self._looked_up = time.monotonic()
        return data

    def renew(self) -> None:
        """Renew the token, or log in again when renewing cannot extend it."""
        with self._lock:
            if self._renewable:
                with vault_errors(self.where, f"token renewal at {self.auth.url}"):
                    self._client.auth.token.renew_self()
                    self._look_up()
                self.renewals += 1
                # Renewal is capped by the token's max TTL: once it leaves about a second, a
                # new login (or a new token file from the agent that writes it) is the way on.
                if self.ttl > MIN_TTL_SECONDS:
                    return
            self._login()

    def next_delay(self) -> float:
        if self.ttl <= 0:
            return 0.0  # a token without expiry (root, periodic without TTL): nothing to do
        elapsed = time.monotonic() - self._looked_up
        return max(MIN_DELAY_SECONDS, self.ttl * RENEW_AT - elapsed)

    def _run(self) -> None:
        delay = self.next_delay()
        while delay > 0 and not self._stop.wait(delay):
            try:
                self.renew()
                delay = self.next_delay()
                log.info("%s: Vault token renewed, %.0f s left", self.where, self.ttl)
            except SignerError as exc:
                left = self.ttl - (time.monotonic() - self._looked_up)
                delay = max(MIN_DELAY_SECONDS, min(RETRY_SECONDS, left / 4))
                log.warning("%s: Vault token renewal failed, retrying in %.1f s: %s",
                            self.where, delay, exc)

    # --- reading ---------------------------------------------------------------------------

    def read(self, mount: str, path: str, version: int | None) -> tuple[dict[str, Any], int]:
        """The data of a KV v2 secret and its version."""
        with self._lock, vault_errors(self.where, f"reading {mount}/{path}"):
            reply = self._client.secrets.kv.v2.read_secret_version(
                path=path, version=version, mount_point=mount, raise_on_deleted_version=True
            )
        data = reply["data"]
        return dict(data["data"] or {}), int(data["metadata"]["version"])

    def write(self, mount: str, path: str, data: dict[str, Any], cas: int) -> int:
        """Write `data` as the next KV v2 version of `path` only if `cas` is still the latest
        version (check-and-set; `keys rotate`): FailedPrecondition when another writer came
        first. Returns the version written."""
        import hvac.exceptions as hv

        doing = f"writing {mount}/{path}"
        with self._lock, vault_errors(self.where, doing):
            try:
                reply = self._client.secrets.kv.v2.create_or_update_secret(
                    path=path, secret=data, cas=cas, mount_point=mount)
            except hv.InvalidRequest as exc:
                if "check-and-set" not in str(exc):
                    raise
                raise FailedPrecondition(
                    f"{self.where}: {doing}: version {cas} is no longer the latest (another "
                    "writer changed the secret meanwhile); nothing was written") from None
        return int(reply["data"]["version"])

    def list(self, mount: str, folder: str) -> list[str]:
        """The secret names directly under `folder` (sub-folders, ending in /, left out)."""
        with self._lock, vault_errors(self.where, f"listing {mount}/{folder}"):
            reply = self._client.secrets.kv.v2.list_secrets(path=folder, mount_point=mount)
        return sorted(k for k in reply["data"]["keys"] if not k.endswith("/"))

    # --- sharing ---------------------------------------------------------------------------

    def acquire(self) -> "VaultSession":
        with _registry_lock:
            self._users += 1
            if self._thread is None and self.ttl > 0:
                self._thread = threading.Thread(
                    target=self._run, name=f"vault-renew {self.auth.url}", daemon=True
                )
                self._thread.start()
        return self

    def release(self) -> None:
        with _registry_lock:
            self._users -= 1
            if self._users > 0:
                return
            _sessions.pop(_session_key(self.auth), None)
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __repr__(self) -> str:
        return f"VaultSession({self.auth.url}, {self.auth.login})"


_registry_lock = threading.Lock()
_sessions: dict[tuple[Any, ...], VaultSession] = {}


def _session_key(auth: VaultAuth) -> tuple[Any, ...]:
    return tuple(getattr(auth, name) for name in VaultAuth.model_fields)


def session_for(auth: VaultAuth, where: str) -> VaultSession:
    """The shared, logged-in session for this login (one per distinct login), acquired once
    for the caller: release it when done."""
    key = _session_key(auth)
    with _registry_lock:
        session = _sessions.get(key)
    if session is None:
        created = VaultSession(auth, where)  # logs in outside the lock
        with _registry_lock:
            session = _sessions.setdefault(key, created)
    return session.acquire()


@contextmanager
def vault_errors(where: str, doing: str, login: bool = False) -> Iterator[None]:
    """Translate hvac and requests exceptions into the service's errors; the text names the
    operation and the status, never a token or a secret's data. At login, Vault answers bad
    credentials (an unknown role_id or secret_id, a rejected JWT) with 400."""
    import hvac.exceptions as hv
    import requests

    refused_login: tuple[type[Exception], ...] = (hv.InvalidRequest,) if login else ()
    try:
        yield
    except SignerError:
        raise
    except (hv.Forbidden, hv.Unauthorized):
        raise PermissionDenied(f"{where}: Vault refused {doing} (permission denied)") from None
    except refused_login:
        raise PermissionDenied(f"{where}: Vault refused {doing} (invalid credentials)") from None
    except hv.InvalidPath:
        raise FailedPrecondition(f"{where}: {doing}: no such secret or path in Vault") from None
    except hv.VaultDown:
        raise BackendUnavailable(f"{where}: {doing}: Vault is sealed or down") from None
    except hv.VaultError as exc:
        raise BackendUnavailable(
            f"{where}: {doing}: Vault answered {type(exc).__name__}"
        ) from None
    except requests.exceptions.SSLError:
        raise BackendUnavailable(f"{where}: {doing}: TLS to Vault failed (check ca_file)") from None
    except requests.exceptions.RequestException as exc:
        raise BackendUnavailable(
            f"{where}: {doing}: Vault unreachable ({type(exc).__name__})"
        ) from None


class VaultBackend(EnvBackend):
    name: ClassVar[str] = "vault"

    def __init__(self, private_key: Any, session: VaultSession, version: int) -> None:
        super().__init__(private_key)
        self.session = session
        self.version = version  # the KV version the key was read from

    @classmethod
    def open(cls, key_id: str, config: VaultKeyConfig) -> "VaultBackend":
        where = f"keys.{key_id}"
        session = session_for(config, where)
        try:
            return cls.read(where, session, config.mount, config.path, config.field,
                            config.password_field, config.version)
        except BaseException:
            session.release()
            raise

    @classmethod
    def read(cls, where: str, session: VaultSession, mount: str, path: str, field: str,
             password_field: str | None, version: int | None) -> "VaultBackend":
        """Read one key with an acquired session, which the backend then owns."""
        data, read_version = session.read(mount, path, version)
        at = f"{where}: Vault secret {mount}/{path} (version {read_version})"
        value = data.get(field)
        if value is None:
            raise FailedPrecondition(f"{at} has no field {field!r}")
        if isinstance(value, dict) or (isinstance(value, str) and value.lstrip().startswith("{")):
            if password_field is None:
                raise ConfigError(f"{at}: field {field!r} holds a keystore: set password_field")
            password = data.get(password_field)
            if not isinstance(password, str) or not password:
                raise FailedPrecondition(f"{at} has no password field {password_field!r}")
            text = value if isinstance(value, str) else json.dumps(value)
            key = decrypt_keystore(text, password, f"{at} field {field!r}")
        elif isinstance(value, str):
            key = parse_private_key(value, f"{at} field {field!r}")
        else:
            raise FailedPrecondition(f"{at}: field {field!r} is not a string")
        return cls(key, session, read_version)

    def close(self) -> None:
        with _registry_lock:
            closed, self._closed = getattr(self, "_closed", False), True
        if not closed:
            self.session.release()
