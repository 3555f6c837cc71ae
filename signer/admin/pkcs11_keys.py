"""`wallet-signer keys create|list|import --backend pkcs11`: provisioning secp256k1 keys on a token.

Private keys are created sensitive and never extractable, with sign as their only usage; an
imported key gets a public key object beside it (a private key object carries no EC_POINT).
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signer.backends.pkcs11 import (
    SECP256K1_EC_PARAMS,
    TokenConnection,
    connect,
    disconnect,
    ec_point_to_sec1,
    read_pin,
    translate,
)
from signer.config import SOFTHSM_MODULE, Config, Pkcs11KeyConfig
from signer.errors import ConfigError, InvalidRequest
from signer.eth.fields import address_of

_HEX_KEY = re.compile(r"(0x)?[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Target:
    """Which token to work on, and where its PIN comes from (never the PIN itself)."""

    module: Path
    token_label: str
    pin_env: str | None
    pin_file: Path | None


def create_key(args: argparse.Namespace, config: Config | None) -> int:
    label = _required_label(args)
    target = resolve_target(args, config)
    with _session(target) as session:
        key_id, public_key = generate_key(session, label)
    _report(target, label, key_id, public_key, "generated on the token")
    return 0


def import_key(args: argparse.Namespace, config: Config | None) -> int:
    from signer.backends.env import parse_private_key

    label = _required_label(args)
    target = resolve_target(args, config)
    if args.key_file is not None and _HEX_KEY.fullmatch(str(args.key_file).strip()):
        raise ConfigError("--key-file takes the name of a file holding the key, not the key")
    source = "stdin" if args.key_file is None else f"file {args.key_file}"
    try:
        text = sys.stdin.read() if args.key_file is None else args.key_file.read_text("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the private key from {source}: {type(exc).__name__}"
        ) from None
    parse_private_key(text, f"private key from {source}")  # validates; errors never echo it
    secret = bytes.fromhex(text.strip().removeprefix("0x"))
    with _session(target) as session:
        key_id, public_key = store_private_key(session, label, secret)
    _report(target, label, key_id, public_key, "imported")
    print(f"# delete the plaintext key ({source}) now that the token holds it", file=sys.stderr)
    return 0


def list_keys(args: argparse.Namespace, config: Config | None) -> int:
    target = resolve_target(args, config)
    with _session(target) as session:
        rows = list(token_keys(session))
    print("label\tid\taddress\torigin")
    for label, key_id, public_key, origin in rows:
        address = address_of(public_key) if public_key else "(no public key)"
        print(f"{label}\t{key_id.hex()}\t{address}\t{origin}")
    return 0


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

def resolve_target(args: argparse.Namespace, config: Config | None) -> Target:
    """Flags first, then the config's pkcs11 key (the one labelled --label, else the first),
    else the project-local development SoftHSM token."""
    key = _config_key(config, getattr(args, "label", None))
    if args.token_label or key is not None:
        pin_env = args.pin_env or (key.pin_env if key and not args.pin_file else None)
        pin_file = args.pin_file or (key.pin_file if key and not args.pin_env else None)
        token_label = args.token_label or (key.token_label if key else None)
        if token_label is None or (pin_env is None and pin_file is None):
            raise ConfigError("name the token's PIN source: --pin-env or --pin-file")
        module = args.module or (key.module if key else SOFTHSM_MODULE)
        return Target(module, token_label, pin_env, pin_file)
    from signer import defaults

    token = defaults.ensure_dev_token()
    return Target(args.module or SOFTHSM_MODULE, token.label, None, token.pin_file)


def _config_key(config: Config | None, label: str | None) -> Pkcs11KeyConfig | None:
    keys = [k for k in (config.keys.values() if config else []) if isinstance(k, Pkcs11KeyConfig)]
    return next((k for k in keys if k.key_label == label), keys[0] if keys else None)


@contextmanager
def _session(target: Target) -> Iterator[Any]:
    """A read-write session on the logged-in token; pkcs11 errors become signer errors."""
    import pkcs11

    pin = read_pin("(cli)", target.pin_env, target.pin_file)
    connection: TokenConnection = connect(target.module, target.token_label, pin)
    try:
        with connection.library.gate.shared():
            session = connection.open_session(rw=True)
            try:
                yield session
            except pkcs11.PKCS11Error as exc:
                raise translate(exc, f"token {target.token_label!r}") from None
            finally:
                session.close()
    finally:
        disconnect(connection)


def _required_label(args: argparse.Namespace) -> str:
    if not args.label:
        raise ConfigError("--label is required")
    label: str = args.label
    return label


def _report(target: Target, label: str, key_id: bytes, public_key: bytes, origin: str) -> None:
    address = address_of(public_key)
    pin = f'pin_env = "{target.pin_env}"' if target.pin_env else f'pin_file = "{target.pin_file}"'
    print(f"{origin}: key {label!r} id {key_id.hex()} address {address}")
    print(f'\n[keys.{label}]\nbackend = "pkcs11"\nmodule = "{target.module}"\n'
          f'token_label = "{target.token_label}"\n{pin}\nkey_label = "{label}"\n'
          f'key_id = "{key_id.hex()}"')
