"""The next version of a key kept as a secret (`keys rotate` for keystore, vault, aws-secret).

A fresh key (os.urandom through eth-account's `Account.create`) is written where the key's
config reads it, in the same form as the version before it: a hex key stays hex (with or
without 0x), a V3 keystore is encrypted with the same password and the same KDF and cost
(scrypt `n` or pbkdf2 `c`; eth-account writes r = 8, p = 1, dklen = 32). Nothing here prints or
logs a key or a password; errors name the place written, never its content.

- keystore: a new file `<stem>@<N>.json` beside the configured one, O_EXCL (never overwrites),
  mode 0600, the file and its folder fsync'd.
- vault (KV v2): a new version of the same secret, check-and-set on the version read, the
  secret's other fields copied.
- aws-secret: PutSecretValue on the same secret (a new random ClientRequestToken), which moves
  AWSCURRENT to it; the new version is pinned by its VersionId.

Each returns the new version's config (the base with the new file, KV version or VersionId)
and what was written, for the operator and the audit record.
"""

import json
import os
import uuid
from pathlib import Path
from typing import Any

from signer.backends.base import DigestBackend
from signer.config import AwsSecretKeyConfig, KeyConfig, KeystoreKeyConfig, VaultKeyConfig
from signer.errors import ConfigError, FailedPrecondition
from signer.secret_sources import read_secret


def new_private_key() -> bytes:
    from eth_account import Account

    return bytes(Account.create().key)


def encrypted_like(key: bytes, password: str, like: dict[str, Any], where: str) -> dict[str, Any]:
    """`key` as a V3 keystore with the KDF and cost of the keystore `like`."""
    from eth_account import Account

    crypto = like.get("crypto") or like.get("Crypto")
    if not isinstance(crypto, dict) or not isinstance(crypto.get("kdfparams"), dict):
        raise ConfigError(f"{where}: not a V3 keystore (no crypto.kdfparams)")
    kdf, params = crypto.get("kdf"), crypto["kdfparams"]
    cost = params.get("n") if kdf == "scrypt" else params.get("c") if kdf == "pbkdf2" else None
    if not isinstance(cost, int) or cost < 1:
        raise ConfigError(f"{where}: keystore KDF {kdf!r} without a usable cost: only scrypt "
                          "and pbkdf2 keystores can be rotated in place")
    return dict(Account.encrypt(key, password, kdf=kdf, iterations=cost))


# --- keystore --------------------------------------------------------------------------------

def create_keystore_version(key_id: str, base: KeystoreKeyConfig,
                            version: int) -> tuple[KeystoreKeyConfig, str]:
    from signer.backends.keystore import read_keystore_file

    where = f"keys.{key_id}"
    password = read_secret(where, "keystore password", base.password_env, base.password_file)
    original = base.keystore_file
    at = f"{where}: keystore file {original}"
    try:
        document = json.loads(read_keystore_file(where, original))
    except ValueError:
        raise ConfigError(f"{at}: not a JSON keystore") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{at}: not a V3 keystore")
    target = original.with_name(f"{original.stem}@{version}.json")
    fresh = encrypted_like(new_private_key(), password, document, at)
    write_new_file(where, target, json.dumps(fresh).encode())
    return base.model_copy(update={"keystore_file": target}), f"keystore file {target}"


def write_new_file(where: str, path: Path, data: bytes) -> None:
    """Create `path` (never overwriting), mode 0600, and make it and its name durable."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise FailedPrecondition(
            f"{where}: {path} exists already (an earlier rotate that did not finish?); it is "
            "never overwritten: move it away, then rotate again") from None
    except OSError as exc:
        raise FailedPrecondition(
            f"{where}: cannot create {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise FailedPrecondition(
            f"{where}: writing {path} failed ({exc.strerror or type(exc).__name__}); "
            "nothing was kept") from None


# --- vault -----------------------------------------------------------------------------------

def create_vault_version(key_id: str, base: VaultKeyConfig) -> tuple[VaultKeyConfig, str]:
    from signer.backends.vault import session_for

    where = f"keys.{key_id}"
    session = session_for(base, where)
    try:
        data, latest = session.read(base.mount, base.path, None)
        at = f"{where}: Vault secret {base.mount}/{base.path} (version {latest})"
        data[base.field] = _next_value(data.get(base.field), at, base.field,
                                       lambda: _vault_password(data, base, at))
        written = session.write(base.mount, base.path, data, cas=latest)
    finally:
        session.release()
    return base.model_copy(update={"version": written}), \
        f"Vault KV version {written} of {base.mount}/{base.path}"


def _vault_password(data: dict[str, Any], base: VaultKeyConfig, at: str) -> str:
    if base.password_field is None:
        raise ConfigError(f"{at}: field {base.field!r} holds a keystore: set password_field")
    password = data.get(base.password_field)
    if not isinstance(password, str) or not password:
        raise FailedPrecondition(f"{at} has no password field {base.password_field!r}")
    return password


# --- aws-secret ------------------------------------------------------------------------------

def create_aws_secret_version(key_id: str,
                              base: AwsSecretKeyConfig) -> tuple[AwsSecretKeyConfig, str]:
    from signer.backends.aws_secret import (
        SecretsSettings,
        client_for,
        secret_string,
        secret_version,
        secrets_errors,
    )

    where = f"keys.{key_id}"
    client = client_for(SecretsSettings.of(base))
    text, read_id = secret_version(client, where, base.secret_id, "AWSCURRENT")
    at = f"{where}: secret {base.secret_id!r} (AWSCURRENT, version {read_id})"

    def password() -> str:
        if base.password_secret_id is None:
            raise FailedPrecondition(f"{at} holds a keystore: set password_secret_id")
        return secret_string(client, where, base.password_secret_id, "AWSCURRENT").strip()

    value = _next_value(text, at, "SecretString", password)
    with secrets_errors(where, f"writing secret {base.secret_id!r}"):
        reply = client.put_secret_value(SecretId=base.secret_id, SecretString=value,
                                        ClientRequestToken=str(uuid.uuid4()))
    written = str(reply["VersionId"])
    return base.model_copy(update={"version_id": written}), \
        f"secret {base.secret_id!r} version {written} (now AWSCURRENT)"


# --- one form for both -----------------------------------------------------------------------

def _next_value(old: Any, at: str, field: str, password: Any) -> Any:
    """A fresh key in the form of `old`: a keystore object or JSON text (same password and
    KDF), or hex text (with 0x when `old` had it)."""
    if old is None:
        raise FailedPrecondition(f"{at} has no field {field!r}")
    key = new_private_key()
    if isinstance(old, dict) or (isinstance(old, str) and old.lstrip().startswith("{")):
        try:
            document = old if isinstance(old, dict) else json.loads(old)
        except ValueError:
            raise ConfigError(f"{at}: field {field!r} is not a JSON keystore") from None
        fresh = encrypted_like(key, password(), document, f"{at} field {field!r}")
        return fresh if isinstance(old, dict) else json.dumps(fresh)
    if not isinstance(old, str):
        raise FailedPrecondition(f"{at}: field {field!r} is not a string")
    return ("0x" if old.strip().startswith(("0x", "0X")) else "") + key.hex()


# --- version 1 -------------------------------------------------------------------------------

def pinned(base: KeyConfig, backend: DigestBackend) -> KeyConfig | None:
    """`base` pinned to the secret version `backend` was just read from, when `base` leaves it
    to "the latest at load" (vault without `version`, aws-secret without `version_id`), which
    a rotation is about to change; None otherwise."""
    if isinstance(base, VaultKeyConfig) and base.version is None:
        from signer.backends.vault import VaultBackend

        if isinstance(backend, VaultBackend):
            return base.model_copy(update={"version": backend.version})
    if isinstance(base, AwsSecretKeyConfig) and base.version_id is None:
        from signer.backends.aws_secret import AwsSecretBackend

        if isinstance(backend, AwsSecretBackend) and backend.version_id:
            return base.model_copy(update={"version_id": backend.version_id})
    return None


def follows_latest(base: KeyConfig) -> bool:
    """Does this config read whatever version of its secret is newest?"""
    if isinstance(base, VaultKeyConfig):
        return base.version is None
    if isinstance(base, AwsSecretKeyConfig):
        return base.version_id is None and base.version_stage == "AWSCURRENT"
    return False
