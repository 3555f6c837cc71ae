"""`wallet-signer keys create|list --backend kms`: provision and find Ethereum keys in AWS KMS.

Region and endpoint come from the command line, else from the first kms key in the config,
else from the standard AWS chain (AWS_REGION, profile). Credentials: the standard chain only.
Functions take typed options and return what they found or made; the CLI prints.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from signer.backends.kms import (
    KEY_SPEC,
    KEY_USAGE,
    ClientSettings,
    parse_public_key_reply,
    shared_client,
    translate,
)
from signer.config import KEY_ID_PATTERN, Config, KmsKeyConfig
from signer.errors import ConfigError, InvalidRequest, SignerError
from signer.eth.fields import address_of

TAGS = [{"TagKey": "wallet-signer", "TagValue": "ethereum-signing"}]
DESCRIPTION = ("wallet-signer Ethereum signing key (secp256k1). Deleting it makes its address's "
               "funds unspendable.")
# AWS: 1-256 characters of [a-zA-Z0-9/_-] after "alias/"; the "aws/" prefix is reserved.
_ALIAS_RE = re.compile(r"alias/(?!aws/)[A-Za-z0-9/_-]{1,250}")
# Admin calls are rare and not latency-bound: a longer read timeout than serving's default.
_CONNECT_TIMEOUT, _READ_TIMEOUT, _ATTEMPTS = 5.0, 30.0, 3


@dataclass(frozen=True)
class KmsOptions:
    """Where, as the operator named it (None: not given; the config or AWS's chain fills in)."""

    region: str | None = None
    endpoint_url: str | None = None


@dataclass(frozen=True)
class CreatedKey:
    arn: str
    alias: str
    address: str
    region: str
    endpoint_url: str | None

    def config_stanza(self) -> str:
        """The `[keys.NAME]` table that serves this key."""
        return _stanza(self.alias, self.region, self.endpoint_url)


@dataclass(frozen=True)
class AccountKey:
    """An Ethereum (ECC_SECG_P256K1, SIGN_VERIFY) key of the account; address None unless the
    key is enabled (only an enabled key answers GetPublicKey)."""

    key_id: str
    state: str
    address: str | None
    aliases: tuple[str, ...]


def create_key(alias_name: str, options: KmsOptions, config: Config | None) -> CreatedKey:
    """Create an ECC_SECG_P256K1 SIGN_VERIFY key, tag it and alias it."""
    alias = _alias(alias_name)
    region, endpoint_url = _location(options, config)
    client = _client(region, endpoint_url)
    _refuse_existing_alias(client, alias)
    created = _call(client.create_key, alias, "CreateKey", KeySpec=KEY_SPEC, KeyUsage=KEY_USAGE,
                    Description=DESCRIPTION,
                    Tags=[*TAGS, {"TagKey": "wallet-signer:alias", "TagValue": alias}])
    key_id = created["KeyMetadata"]["KeyId"]
    try:
        _call(client.create_alias, alias, "CreateAlias", AliasName=alias, TargetKeyId=key_id)
    except Exception as failure:
        raise _given_back(client, key_id, alias, failure) from None
    address = _address(client, key_id, alias)
    return CreatedKey(created["KeyMetadata"]["Arn"], alias, address, region, endpoint_url)


def list_keys(options: KmsOptions, config: Config | None) -> list[AccountKey]:
    """The account's Ethereum keys, in KMS's order."""
    region, endpoint_url = _location(options, config)
    client = _client(region, endpoint_url)
    aliases = _aliases_by_key(client)
    found = []
    for key_id in _paginate(client, "list_keys", "Keys", "KeyId"):
        meta = _call(client.describe_key, key_id, "DescribeKey", KeyId=key_id)["KeyMetadata"]
        if meta.get("KeySpec") != KEY_SPEC or meta.get("KeyUsage") != KEY_USAGE:
            continue
        state = str(meta.get("KeyState", "Unknown"))
        address = _address(client, key_id, key_id) if state == "Enabled" else None
        found.append(AccountKey(key_id, state, address, tuple(sorted(aliases.get(key_id, [])))))
    return found


def _alias(name: str) -> str:
    alias = name if name.startswith("alias/") else f"alias/{name}"
    if not _ALIAS_RE.fullmatch(alias):
        raise ConfigError(
            f"--alias {name!r}: use letters, digits, '/', '_' or '-' (the aws/ prefix is reserved)"
        )
    return alias


def _location(options: KmsOptions, config: Config | None) -> tuple[str, str | None]:
    configured = next(
        (k for k in (config.keys.values() if config else ()) if isinstance(k, KmsKeyConfig)), None
    )
    region = options.region or (configured.region if configured else None) or _default_region()
    if not region:
        raise ConfigError("no AWS region: pass --region, or set AWS_REGION")
    endpoint_url = options.endpoint_url or (configured.endpoint_url if configured else None)
    return region, endpoint_url


def _default_region() -> str | None:
    import boto3

    region: str | None = boto3.session.Session().region_name
    return region


def _client(region: str, endpoint_url: str | None) -> Any:
    return shared_client(
        ClientSettings(region, endpoint_url, _CONNECT_TIMEOUT, _READ_TIMEOUT, _ATTEMPTS)
    )


def _call(method: Any, subject: str, operation: str, **params: Any) -> Any:
    try:
        return method(**params)
    except (BotoCoreError, ClientError) as exc:
        raise translate(exc, subject, operation) from None


def _refuse_existing_alias(client: Any, alias: str) -> None:
    try:
        target = client.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NotFoundException":
            return
        raise translate(exc, alias, "DescribeKey") from None
    except BotoCoreError as exc:
        raise translate(exc, alias, "DescribeKey") from None
    # the operator's choice of name, like a PKCS#11 label already in use: bad input
    raise InvalidRequest(f"{alias} already exists (key {target}); choose another --alias")


def _address(client: Any, key_id: str, subject: str) -> str:
    reply = _call(client.get_public_key, subject, "GetPublicKey", KeyId=key_id)
    _, public_key = parse_public_key_reply(reply, subject)
    return address_of(public_key)


def _aliases_by_key(client: Any) -> dict[str, list[str]]:
    aliases: dict[str, list[str]] = {}
    for alias in _paginate(client, "list_aliases", "Aliases", None):
        if alias.get("TargetKeyId"):
            aliases.setdefault(alias["TargetKeyId"], []).append(alias["AliasName"])
    return aliases


def _paginate(client: Any, operation: str, items: str, field: str | None) -> Iterator[Any]:
    try:
        for page in client.get_paginator(operation).paginate():
            for item in page.get(items, []):
                yield item[field] if field else item
    except (BotoCoreError, ClientError) as exc:
        raise translate(exc, "account", operation) from None


def _stanza(alias: str, region: str, endpoint_url: str | None) -> str:
    name = alias.removeprefix("alias/").replace("/", "-")
    if not re.fullmatch(KEY_ID_PATTERN, name):
        name = "kms"
    lines = [f"[keys.{name}]", 'backend = "kms"', f'kms_key_id = "{alias}"', f'region = "{region}"']
    if endpoint_url:
        lines.append(f'endpoint_url = "{endpoint_url}"')
    return "\n".join(lines)


# --- import (BYOK): GetParametersForImport, wrap, ImportKeyMaterial ----------------------------

WRAPPING_ALGORITHM = "RSAES_OAEP_SHA_256"
WRAPPING_KEY_SPEC = "RSA_4096"


def import_key(alias_name: str, secret: bytes, options: KmsOptions,
               config: Config | None) -> CreatedKey:
    """Import an existing secp256k1 key as a new EXTERNAL-origin KMS key, alias it, and check
    that KMS reports the key's own address. A key left half-made is scheduled for deletion."""
    from coincurve import PrivateKey

    expected = address_of(PrivateKey(secret).public_key.format(compressed=False))
    alias = _alias(alias_name)
    region, endpoint_url = _location(options, config)
    client = _client(region, endpoint_url)
    _refuse_existing_alias(client, alias)
    created = _call(client.create_key, alias, "CreateKey", KeySpec=KEY_SPEC, KeyUsage=KEY_USAGE,
                    Origin="EXTERNAL", Description=DESCRIPTION,
                    Tags=[*TAGS, {"TagKey": "wallet-signer:alias", "TagValue": alias}])
    key_id = created["KeyMetadata"]["KeyId"]
    try:
        params = _call(client.get_parameters_for_import, alias, "GetParametersForImport",
                       KeyId=key_id, WrappingAlgorithm=WRAPPING_ALGORITHM,
                       WrappingKeySpec=WRAPPING_KEY_SPEC)
        _call(client.import_key_material, alias, "ImportKeyMaterial", KeyId=key_id,
              ImportToken=params["ImportToken"],
              EncryptedKeyMaterial=wrap_key_material(secret, params["PublicKey"]),
              ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
        # checked before the alias exists, so that the alias only ever names the right key
        address = _address(client, key_id, alias)
        if address != expected:
            raise ConfigError(f"{alias}: KMS reports address {address} for the imported key, "
                              f"expected {expected}")
        _call(client.create_alias, alias, "CreateAlias", AliasName=alias, TargetKeyId=key_id)
    except Exception as failure:
        raise _given_back(client, key_id, alias, failure) from None
    return CreatedKey(created["KeyMetadata"]["Arn"], alias, address, region, endpoint_url)


def _given_back(client: Any, key_id: str, alias: str, failure: Exception) -> Exception:
    """Schedule a half-made key for deletion (an unnamed or empty key is easy to lose track of;
    7 days is KMS's minimum window) and return `failure` saying so, or saying that it could not:
    a failed clean-up must not hide why the command failed."""
    try:
        _call(client.schedule_key_deletion, alias, "ScheduleKeyDeletion", KeyId=key_id,
              PendingWindowInDays=7)
        outcome = f"the half-made KMS key {key_id} is scheduled for deletion in 7 days"
    except SignerError as cleanup:
        outcome = (f"the half-made KMS key {key_id} could not be scheduled for deletion "
                   f"({cleanup}): schedule it yourself")
    if isinstance(failure, SignerError):
        return type(failure)(f"{failure}; {outcome}")
    failure.add_note(outcome)
    return failure


def wrap_key_material(secret: bytes, wrapping_public_key_der: bytes) -> bytes:
    """The private key as KMS wants asymmetric key material (PKCS#8 DER), encrypted to the
    import's wrapping key with RSAES-OAEP SHA-256."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    private = ec.derive_private_key(int.from_bytes(secret, "big"), ec.SECP256K1())
    pkcs8 = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    wrapping = serialization.load_der_public_key(wrapping_public_key_der)
    if not isinstance(wrapping, rsa.RSAPublicKey):
        raise ConfigError("KMS returned a wrapping key that is not RSA")
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    return wrapping.encrypt(pkcs8, oaep)


# --- rotation (signer.admin.rotation) ----------------------------------------------------------

def resolve_arn(config: KmsKeyConfig) -> str:
    """The ARN that `kms_key_id` (an alias, id or ARN) names now."""
    client = _client(config.region, config.endpoint_url)
    meta = _call(client.describe_key, config.kms_key_id, "DescribeKey",
                 KeyId=config.kms_key_id)["KeyMetadata"]
    return str(meta["Arn"])


def create_version_key(base: KmsKeyConfig, label: str, move_alias: bool) -> str:
    """A new key for the next version of `base`, tagged with the key id and version (`label`,
    KEY@N), in the same region; the alias `base.kms_key_id` is re-pointed to it only with
    `move_alias`. Returns its ARN."""
    client = _client(base.region, base.endpoint_url)
    alias = base.kms_key_id if base.kms_key_id.startswith("alias/") else None
    if move_alias and alias is None:
        raise InvalidRequest(f"--move-alias: key {base.kms_key_id!r} is not named by an alias")
    created = _call(client.create_key, label, "CreateKey", KeySpec=KEY_SPEC, KeyUsage=KEY_USAGE,
                    Description=DESCRIPTION,
                    Tags=[*TAGS, {"TagKey": "wallet-signer:version", "TagValue": label}])
    arn = str(created["KeyMetadata"]["Arn"])
    if move_alias and alias is not None:
        _call(client.update_alias, alias, "UpdateAlias", AliasName=alias,
              TargetKeyId=created["KeyMetadata"]["KeyId"])
    return arn


def disable_key(config: KmsKeyConfig) -> str:
    """DisableKey on the key `config` names (a retired version's): it can sign no more, for
    anyone, until re-enabled in KMS."""
    client = _client(config.region, config.endpoint_url)
    key_id = _call(client.describe_key, config.kms_key_id, "DescribeKey",
                   KeyId=config.kms_key_id)["KeyMetadata"]["KeyId"]
    _call(client.disable_key, config.kms_key_id, "DisableKey", KeyId=key_id)
    return f"KMS DisableKey {config.kms_key_id}"
