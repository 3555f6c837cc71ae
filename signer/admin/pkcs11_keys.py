"""`wallet-signer keys create|list|import --backend pkcs11`: provisioning secp256k1 keys on a token.

Private keys are created sensitive and never extractable, with sign as their only usage; an
imported key gets a public key object beside it (a private key object carries no EC_POINT).
Functions take typed options and return what they did; the CLI prints.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from signer.admin import softhsm
from signer.backends.pkcs11 import SECP256K1_EC_PARAMS, ec_point_to_sec1, open_session, read_pin
from signer.config import SOFTHSM_MODULE, Config, Pkcs11KeyConfig
from signer.errors import ConfigError, InvalidRequest
from signer.eth.fields import address_of

_HEX_KEY = re.compile(r"(0x)?[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class TokenOptions:
    """Which token, as the operator named it (None: not given; the config or the development
    token fills in). `label` picks the configured key whose token is meant."""

    label: str | None = None
    token_label: str | None = None
    module: Path | None = None
    pin_env: str | None = None
    pin_file: Path | None = None


@dataclass(frozen=True)
class Target:
    """Which token to work on, and where its PIN comes from (never the PIN itself)."""

    module: Path
    token_label: str
    pin_env: str | None
    pin_file: Path | None


@dataclass(frozen=True)
class ProvisionedKey:
    """A key now on the token: where, under which label and CKA_ID, and its public key."""

    target: Target
    label: str
    key_id: bytes
    public_key: bytes
    origin: str  # "generated on the token" or "imported"

    @property
    def address(self) -> str:
        return address_of(self.public_key)

    def config_stanza(self) -> str:
        """The `[keys.LABEL]` table that serves this key."""
        target = self.target
        pin = f'pin_env = "{target.pin_env}"' if target.pin_env else \
            f'pin_file = "{target.pin_file}"'
        return (f'[keys.{self.label}]\nbackend = "pkcs11"\nmodule = "{target.module}"\n'
                f'token_label = "{target.token_label}"\n{pin}\nkey_label = "{self.label}"\n'
                f'key_id = "{self.key_id.hex()}"')


@dataclass(frozen=True)
class TokenKey:
    """A secp256k1 private key found on the token (public key None if it has no public key
    object) and whether it was generated there or imported."""

    label: str
    key_id: bytes
    public_key: bytes | None
    origin: str

    @property
    def address(self) -> str | None:
        return address_of(self.public_key) if self.public_key else None


def create_key(label: str, target: Target) -> ProvisionedKey:
    with _session(target) as session:
        key_id, public_key = generate_key(session, label)
    return ProvisionedKey(target, label, key_id, public_key, "generated on the token")


def read_key_text(key_file: Path | None, stdin: TextIO) -> tuple[str, str]:
    """(the hex key's text, where it came from) from `key_file`, else `stdin`; errors never
    echo the key."""
    if key_file is not None and _HEX_KEY.fullmatch(str(key_file).strip()):
        raise ConfigError("--key-file takes the name of a file holding the key, not the key")
    source = "stdin" if key_file is None else f"file {key_file}"
    try:
        text = stdin.read() if key_file is None else key_file.read_text("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the private key from {source}: {type(exc).__name__}"
        ) from None
    return text, source


def import_key(label: str, key_text: str, source: str, target: Target) -> ProvisionedKey:
    """Move a hex private key (from `source`, named in errors) into the token."""
    from signer.backends.env import parse_private_key

    parse_private_key(key_text, f"private key from {source}")  # validates; never echoes it
    secret = bytes.fromhex(key_text.strip().removeprefix("0x"))
    with _session(target) as session:
        key_id, public_key = store_private_key(session, label, secret)
    return ProvisionedKey(target, label, key_id, public_key, "imported")


def list_keys(target: Target) -> list[TokenKey]:
    with _session(target) as session:
        return [TokenKey(*row) for row in token_keys(session)]


# --- token operations (also used by the development default and the tests) ---------------------

def generate_key(session: Any, label: str) -> tuple[bytes, bytes]:
    """A new key pair inside the token: (CKA_ID, 65-byte public key)."""
    from pkcs11 import Attribute, KeyType, Mechanism

    key_id = _new_key_id(session, label)
    public, _ = session.generate_keypair(
        KeyType.EC, 0, mechanism=Mechanism.EC_KEY_PAIR_GEN,
        public_template={**_public_attrs(label, key_id), Attribute.EC_PARAMS: SECP256K1_EC_PARAMS},
        private_template=_private_attrs(label, key_id),
    )
    return key_id, ec_point_to_sec1(bytes(public[Attribute.EC_POINT]))


def store_private_key(session: Any, label: str, secret: bytes) -> tuple[bytes, bytes]:
    """Import a raw 32-byte private key sensitive and non-extractable, with its public key."""
    from eth_keys.datatypes import PrivateKey
    from pkcs11 import Attribute, KeyType, ObjectClass

    public_key = b"\x04" + PrivateKey(secret).public_key.to_bytes()
    key_id = _new_key_id(session, label)
    session.create_object({
        **_private_attrs(label, key_id), Attribute.CLASS: ObjectClass.PRIVATE_KEY,
        Attribute.KEY_TYPE: KeyType.EC, Attribute.EC_PARAMS: SECP256K1_EC_PARAMS,
        Attribute.VALUE: secret,
    })
    session.create_object({
        **_public_attrs(label, key_id), Attribute.CLASS: ObjectClass.PUBLIC_KEY,
        Attribute.KEY_TYPE: KeyType.EC, Attribute.EC_PARAMS: SECP256K1_EC_PARAMS,
        # DER OCTET STRING, as PKCS#11 2.40 specifies and SoftHSM itself stores it
        Attribute.EC_POINT: b"\x04\x41" + public_key,
    })
    return key_id, public_key


def token_keys(session: Any) -> Iterator[tuple[str, bytes, bytes | None, str]]:
    """(label, id, public key or None, origin) for every secp256k1 private key on the token."""
    from pkcs11 import Attribute, KeyType, ObjectClass

    privates = list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                                         Attribute.KEY_TYPE: KeyType.EC}))
    publics = {bytes(p[Attribute.ID]): p for p in session.get_objects(
        {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.EC})}
    for private in privates:
        if bytes(private[Attribute.EC_PARAMS]) != SECP256K1_EC_PARAMS:
            continue
        key_id = bytes(private[Attribute.ID])
        public = publics.get(key_id)
        point = ec_point_to_sec1(bytes(public[Attribute.EC_POINT])) if public is not None else None
        local = private[Attribute.LOCAL] and private[Attribute.NEVER_EXTRACTABLE]
        yield private[Attribute.LABEL], key_id, point, (
            "generated on token" if local else "imported")


def label_in_use(session: Any, label: str) -> bool:
    from pkcs11 import Attribute

    return bool(list(session.get_objects({Attribute.LABEL: label})))


def _new_key_id(session: Any, label: str) -> bytes:
    if label_in_use(session, label):
        raise InvalidRequest(f"the token already holds a key labelled {label!r}; pick another")
    return secrets.token_bytes(8)


def _private_attrs(label: str, key_id: bytes) -> dict[Any, Any]:
    from pkcs11 import Attribute

    return {
        Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False, Attribute.SIGN: True, Attribute.DECRYPT: False,
        Attribute.DERIVE: False, Attribute.UNWRAP: False, Attribute.SIGN_RECOVER: False,
        Attribute.LABEL: label, Attribute.ID: key_id,
    }


def _public_attrs(label: str, key_id: bytes) -> dict[Any, Any]:
    from pkcs11 import Attribute

    return {
        Attribute.TOKEN: True, Attribute.PRIVATE: False, Attribute.VERIFY: True,
        Attribute.ENCRYPT: False, Attribute.WRAP: False, Attribute.DERIVE: False,
        Attribute.LABEL: label, Attribute.ID: key_id,
    }


# --- which token ------------------------------------------------------------------------------

def resolve_target(options: TokenOptions, config: Config | None) -> Target:
    """Options first, then the config's pkcs11 key (the one labelled `options.label`, else the
    first), else the project-local development SoftHSM token."""
    key = _config_key(config, options.label)
    if options.token_label or key is not None:
        pin_env = options.pin_env or (key.pin_env if key and not options.pin_file else None)
        pin_file = options.pin_file or (key.pin_file if key and not options.pin_env else None)
        token_label = options.token_label or (key.token_label if key else None)
        if token_label is None or (pin_env is None and pin_file is None):
            raise ConfigError("name the token's PIN source: --pin-env or --pin-file")
        module = options.module or (key.module if key else SOFTHSM_MODULE)
        return Target(module, token_label, pin_env, pin_file)
    token = softhsm.ensure_dev_token()
    return Target(options.module or SOFTHSM_MODULE, token.label, None, token.pin_file)


def _config_key(config: Config | None, label: str | None) -> Pkcs11KeyConfig | None:
    keys = [k for k in (config.keys.values() if config else []) if isinstance(k, Pkcs11KeyConfig)]
    return next((k for k in keys if k.key_label == label), keys[0] if keys else None)


def _session(target: Target) -> AbstractContextManager[Any]:
    """A read-write session on the logged-in token; pkcs11 errors become signer errors."""
    pin = read_pin("(cli)", target.pin_env, target.pin_file)
    return open_session(target.module, target.token_label, pin, rw=True)


# --- rotation (signer.admin.rotation) ----------------------------------------------------------

def disable_signing(config: Pkcs11KeyConfig, address: str) -> str:
    """Set CKA_SIGN false on the private key `config` names (a retired version's), after
    checking its public key is `address`'s: the token refuses to sign with it from now on."""
    from pkcs11 import Attribute, ObjectClass

    target = Target(config.module, config.token_label, config.pin_env, config.pin_file)
    template: dict[Any, Any] = {Attribute.CLASS: ObjectClass.PRIVATE_KEY}
    if config.key_label:
        template[Attribute.LABEL] = config.key_label
    if config.key_id:
        template[Attribute.ID] = bytes.fromhex(config.key_id)
    with _session(target) as session:
        matches = [k for k in token_keys(session)
                   if (not config.key_label or k[0] == config.key_label)
                   and (not config.key_id or k[1] == bytes.fromhex(config.key_id))]
        if len(matches) != 1 or matches[0][2] is None or address_of(matches[0][2]) != address:
            raise InvalidRequest(
                f"--disable-in-backend: the token has no single key {config.key_label!r} "
                f"with address {address}; nothing was disabled")
        for private in session.get_objects(template):
            private[Attribute.SIGN] = False
    return f"PKCS#11 CKA_SIGN false on {config.key_label or config.key_id!r}"
