"""`wallet-signer keys rotate | retire | drain-status`: a key id's versions, in the shared store.

Rotate makes the next version in the key's own backend (an HSM key labelled `KEY@N`, a tagged
KMS key, a keystore file `<stem>@N.json`, a new Vault KV version, a new Secrets Manager secret
version: signer.admin.secret_keys) or adopts another `[keys]` entry (`--to`), self-tests it,
records it active and puts the previous active version into draining; retire stops a draining
version for good. Both wait until every replica has seen the change
(signer.app.versions.FRESHNESS) before returning, and both are audit records naming the
operator and the addresses.
"""

import time
from dataclasses import dataclass, replace
from typing import Any

from signer.admin.state import MAX_REASON, _check_key, _operator, configured_store
from signer.app.audit import AuditLog, utc_now
from signer.app.records import Admin
from signer.app.versions import ACTIVE, DRAINING, FRESHNESS
from signer.config import (
    AwsSecretKeyConfig,
    Config,
    EnvKeyConfig,
    KeyConfig,
    KeystoreKeyConfig,
    KmsKeyConfig,
    Pkcs11KeyConfig,
    VaultKeyConfig,
    key_config_from_json,
    key_config_json,
)
from signer.errors import FailedPrecondition, InvalidRequest, SignerError
from signer.keyload import open_backend
from signer.store import KeyVersionRow, VersionConflict
from signer.wallet import WalletSigner

# Rotate and retire return only once every replica must have seen them: a replica re-reads the
# versions at most FRESHNESS old, and a request that checked just before finishes its signature
# within this margin.
SETTLE_SECONDS = 2 * FRESHNESS + 1.0
SELF_TEST_TIMEOUT = 10.0


@dataclass(frozen=True)
class Rotation:
    key_id: str
    previous: KeyVersionRow  # now draining
    active: KeyVersionRow
    made: str  # what was created or adopted, for the operator


def rotate_key(config: Config, key_id: str, *, to: str | None = None, move_alias: bool = False,
               settle: float = SETTLE_SECONDS) -> Rotation:
    """Make the next version of `key_id` and activate it (see the module docstring)."""
    if key_id not in config.keys and config.key_sources:
        raise InvalidRequest(
            f"no key {key_id!r} in [keys]: a key found by [key_sources] cannot be rotated "
            f"(its name is its file or secret); give it its own [keys.{key_id}] table with the "
            "same source, or rotate by hand (new secret, config, `keys rotate --to`)")
    _check_key(config, key_id)
    if to is not None and move_alias:
        raise InvalidRequest("--move-alias applies when rotate creates a KMS key, not with --to")
    base = config.keys[key_id]
    with configured_store(config) as store:
        rows = [r for r in store.key_versions() if r.key_id == key_id]
        if to is None:
            _refuse_moving_version_one(key_id, base, rows)
        if move_alias and isinstance(base, KmsKeyConfig) and rows and not rows[0].source:
            raise FailedPrecondition(
                f"key {key_id!r}: version 1 was recorded as [keys.{key_id}] (by an earlier "
                "release), which names the alias: moving the alias would replace version 1. "
                f"Set kms_key_id in [keys.{key_id}] to version 1's key ARN first, then rotate")
        first = _version_one(key_id, base, rows, create=to is None)
        pinned_now = not rows and bool(first.source)
        if pinned_now:
            # Version 1 pinned before anything is written: from here on every replica opens
            # it from this source, whatever the secret's latest version or the alias becomes.
            first = store.record_first_version(replace(first, changed_at=utc_now()))
            rows = [first]
        version = (rows[-1].version if rows else 1) + 1
        if to is not None:
            new_config, made = _adopted(config, key_id, to)
        else:
            try:
                new_config, made = _created(config, key_id, base, version, move_alias)
                # `address` pins version 1's address; the store pins each version's own
                new_config = new_config.model_copy(update={"address": None})
            except SignerError as exc:
                if not pinned_now:
                    raise
                raise type(exc)(
                    f"{exc} (version 1 stays active, now recorded in the store pinned to what "
                    f"[keys.{key_id}] named: {_pin_of(first)})") from None
        try:
            signer = _opened_tested(key_id, new_config, version)
            now = utc_now()
            new = KeyVersionRow(key_id, version, signer.address, ACTIVE,
                                key_config_json(new_config), "", now)
            try:
                previous = store.rotate_key(replace(first, changed_at=now), new)
            except VersionConflict as exc:
                raise FailedPrecondition(str(exc)) from None
        except SignerError as exc:
            if to is None:
                raise type(exc)(
                    f"{exc}; rotate had written {made}: it is NOT active (no version {version} "
                    "was recorded, the previous versions are unchanged); remove it or leave it "
                    "unused") from None
            raise
        AuditLog(store, role="cli").write([Admin(
            action="rotate", key_id=key_id, operator=_operator(), details={
                "old_version": previous.version, "old_address": previous.address,
                "new_version": version, "new_address": signer.address, "made": made,
            })])
    time.sleep(settle)
    return Rotation(key_id, previous, new, made)


def retire_key(config: Config, key_id: str, version: int, reason: str, *,
               disable_in_backend: bool = False, settle: float = SETTLE_SECONDS) -> KeyVersionRow:
    """Retire a draining version on every replica; with `disable_in_backend`, also disable it
    where its backend can (KMS DisableKey; PKCS#11 CKA_SIGN false)."""
    _check_key(config, key_id)
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON or not reason.isprintable():
        raise InvalidRequest(f"--reason: 1 to {MAX_REASON} printable characters")
    if version < 1:
        raise InvalidRequest("--version: a version number from 1")
    with configured_store(config) as store:
        audit = AuditLog(store, role="cli")
        try:
            row = store.retire_key_version(key_id, version, reason, utc_now())
        except VersionConflict as exc:
            raise FailedPrecondition(str(exc)) from None
        active = next((r for r in store.key_versions()
                       if r.key_id == key_id and r.state == ACTIVE), None)
        disabled = None
        if disable_in_backend:
            source = config.keys[key_id] if version == 1 else \
                key_config_from_json(row.source, f"key {key_id!r} version {version}")
            disabled = _disable(key_id, source, row.address)
        audit.write([Admin(action="retire", key_id=key_id, operator=_operator(), details={
            "version": version, "address": row.address, "reason": reason,
            "active_version": active.version if active else None,
            "active_address": active.address if active else None,
            "disabled_in_backend": disabled,
        })])
    time.sleep(settle)
    return row


@dataclass(frozen=True)
class DrainStatus:
    row: KeyVersionRow
    pending_nonce: int | None  # from the JSON-RPC upstream, None without one
    balance_wei: int | None
    upstream_error: str | None = None


def drain_status(config: Config, key_id: str) -> list[DrainStatus]:
    """Every version of `key_id` with, when `[jsonrpc] upstream` is configured, each draining
    version's pending nonce and balance at the node."""
    _check_key(config, key_id)
    with configured_store(config) as store:
        rows = [r for r in store.key_versions() if r.key_id == key_id]
    upstream = None
    if config.jsonrpc is not None and config.jsonrpc.upstream:
        from signer.jsonrpc.upstream import Upstream

        upstream = Upstream(config.jsonrpc.upstream, config.jsonrpc.upstream_timeout_seconds)
    found = []
    for row in rows:
        nonce = balance = error = None
        if upstream is not None and row.state == DRAINING:
            try:
                nonce = int(upstream.call("eth_getTransactionCount", [row.address, "pending"]),
                            16)
                balance = int(upstream.call("eth_getBalance", [row.address, "latest"]), 16)
            except SignerError as exc:
                error = str(exc)
        found.append(DrainStatus(row, nonce, balance, error))
    return found


def _version_one(key_id: str, base: KeyConfig, rows: list[KeyVersionRow], *,
                 create: bool) -> KeyVersionRow:
    """Version 1 as the store holds it, or (first rotation) the configured key, opened. A KMS
    version 1 is recorded by its ARN (an alias can move later); when the rotation writes the
    latest version of a Vault or Secrets Manager secret, version 1 is recorded pinned by its
    KV version or VersionId."""
    if rows:
        return rows[0]
    signer = _opened_tested(key_id, base, 1, self_test=False)
    source = ""
    if isinstance(base, KmsKeyConfig):
        # Pinned by ARN whether or not this rotation moves the alias: a later `--move-alias`
        # (or an operator's alias change) must not turn version 1 into another key.
        from signer.admin import kms_keys

        source = key_config_json(base.model_copy(update={"kms_key_id":
                                                         kms_keys.resolve_arn(base)}))
    elif create:
        from signer.admin import secret_keys

        pinned = secret_keys.pinned(base, signer.backend)
        source = key_config_json(pinned) if pinned is not None else ""
    return KeyVersionRow(key_id, 1, signer.address, ACTIVE, source, "", "")


def _refuse_moving_version_one(key_id: str, base: KeyConfig, rows: list[KeyVersionRow]) -> None:
    """Writing a new secret version changes what a config that follows the latest version
    loads: refuse when that would break start-up or silently swap version 1."""
    from signer.admin import secret_keys

    if not secret_keys.follows_latest(base):
        return
    pin = "version = N" if isinstance(base, VaultKeyConfig) else 'version_id = "..."'
    if base.address is not None:
        raise FailedPrecondition(
            f"key {key_id!r} pins address = {base.address} but reads the latest version of its "
            f"secret: after rotate writes a new version, [keys.{key_id}] would load the new key "
            f"and fail its address check at start-up. Pin the version holding it ({pin}) in "
            f"[keys.{key_id}] first, then rotate")
    if rows and not rows[0].source:
        raise FailedPrecondition(
            f"key {key_id!r}: version 1 was recorded as [keys.{key_id}] (an earlier rotate "
            f"--to), which reads the latest version of its secret: a new version written there "
            f"would replace version 1. Pin the version holding it ({pin}) in [keys.{key_id}] "
            "first, then rotate")


def _pin_of(row: KeyVersionRow) -> str:
    source = key_config_from_json(row.source, f"key {row.key_id!r} version 1")
    if isinstance(source, VaultKeyConfig):
        return f"KV version {source.version}"
    if isinstance(source, KmsKeyConfig):
        return source.kms_key_id
    if isinstance(source, AwsSecretKeyConfig):
        return f"secret version {source.version_id}"
    return source.backend  # pragma: no cover - only the three above are pinned


def _adopted(config: Config, key_id: str, to: str) -> tuple[KeyConfig, str]:
    if to == key_id:
        raise InvalidRequest("--to: name another [keys] entry, not the key being rotated")
    if to not in config.keys:
        known = ", ".join(sorted(config.keys)) or "none"
        raise InvalidRequest(f"--to: no key {to!r} in the configuration (keys: {known})")
    return config.keys[to], f"adopted [keys.{to}]"


def _created(config: Config, key_id: str, base: KeyConfig, version: int,
             move_alias: bool) -> tuple[KeyConfig, str]:
    label = f"{key_id}@{version}"
    if isinstance(base, Pkcs11KeyConfig):
        from signer.admin import pkcs11_keys

        target = pkcs11_keys.Target(base.module, base.token_label, base.pin_env, base.pin_file)
        made = pkcs11_keys.create_key(label, target)
        return base.model_copy(update={"key_label": label, "key_id": made.key_id.hex()}), \
            f"HSM key {label!r} on token {base.token_label!r}"
    if isinstance(base, KmsKeyConfig):
        from signer.admin import kms_keys

        arn = kms_keys.create_version_key(base, label, move_alias)
        return base.model_copy(update={"kms_key_id": arn}), f"KMS key {arn}" + (
            f" (alias {base.kms_key_id} moved to it)" if move_alias else "")
    if isinstance(base, EnvKeyConfig):
        raise InvalidRequest(
            f"key {key_id!r} uses the env backend, which cannot make keys: put the new key in "
            "[keys.NEW] and adopt it with `keys rotate --to NEW`")
    from signer.admin import secret_keys

    if isinstance(base, KeystoreKeyConfig):
        return secret_keys.create_keystore_version(key_id, base, version)
    if isinstance(base, VaultKeyConfig):
        return secret_keys.create_vault_version(key_id, base)
    return secret_keys.create_aws_secret_version(key_id, base)


def _opened_tested(key_id: str, config: KeyConfig, version: int,
                   self_test: bool = True) -> WalletSigner:
    backend = open_backend(key_id, config)
    try:
        signer = WalletSigner(key_id, backend, version=version)
        if self_test:
            signer.self_test(SELF_TEST_TIMEOUT)
    except BaseException:
        backend.close()
        raise
    backend.close()
    return signer


def _disable(key_id: str, source: KeyConfig, address: str) -> str:
    """Disable the version's key where the backend can; what was done, for the audit."""
    if isinstance(source, KmsKeyConfig):
        from signer.admin import kms_keys

        return kms_keys.disable_key(source)
    if isinstance(source, Pkcs11KeyConfig):
        from signer.admin import pkcs11_keys

        return pkcs11_keys.disable_signing(source, address)
    raise InvalidRequest(
        f"--disable-in-backend: the {source.backend} backend of key {key_id!r} has nothing to "
        "disable (remove the secret where it is kept)")


def describe(row: KeyVersionRow) -> dict[str, Any]:
    return {"version": row.version, "address": row.address, "state": row.state,
            "changed_at": row.changed_at, "reason": row.reason}
