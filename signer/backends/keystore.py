"""Keys decrypted into this process from a Web3 Secret Storage (V3) keystore file.

Like `env`, the private key then lives in process memory and signs with libsecp256k1 (the
`EnvBackend` signing path); unlike `env`, the key is encrypted at rest, so it is allowed in
production. Decryption (scrypt or pbkdf2, as the file says) is eth-account's `Account.decrypt`.
"""

import json
import logging
from pathlib import Path
from typing import Any, ClassVar

from coincurve import PrivateKey

from signer.backends.env import EnvBackend, parse_private_key
from signer.config import KeystoreKeyConfig
from signer.errors import ConfigError, FailedPrecondition
from signer.secret_sources import read_secret

log = logging.getLogger(__name__)

MAX_KEYSTORE_BYTES = 64 * 1024


class KeystoreBackend(EnvBackend):
    name: ClassVar[str] = "keystore"

    @classmethod
    def open(cls, key_id: str, config: KeystoreKeyConfig) -> "KeystoreBackend":
        where = f"keys.{key_id}"
        password = read_secret(where, "keystore password", config.password_env,
                               config.password_file)
        text = read_keystore_file(where, config.keystore_file)
        at = f"{where}: keystore file {config.keystore_file}"
        return cls(decrypt_keystore(text, password, at))


def read_keystore_file(where: str, path: Path) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEYSTORE_BYTES + 1)
    except OSError as exc:
        raise FailedPrecondition(
            f"{where}: cannot read keystore file {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    if len(data) > MAX_KEYSTORE_BYTES:
        raise FailedPrecondition(f"{where}: keystore file {path} is larger than 64 KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FailedPrecondition(f"{where}: keystore file {path} is not UTF-8 JSON") from None


def is_keystore(text: str) -> bool:
    """Does `text` look like a V3 keystore (a JSON object) rather than a hex key?"""
    return text.lstrip().startswith("{")


def decrypt_keystore(text: str, password: str, where: str) -> PrivateKey:
    """The key of a V3 keystore JSON document. Errors name `where` and the cause, never the
    password or the key: FailedPrecondition (exit 3 at start-up) for a keystore that cannot be
    opened with this password, ConfigError for one that is not a keystore at all."""
    from eth_account import Account

    try:
        document: Any = json.loads(text)
    except ValueError:
        raise ConfigError(f"{where}: not a JSON keystore") from None
    if not isinstance(document, dict) or not isinstance(document.get("crypto")
                                                        or document.get("Crypto"), dict):
        raise ConfigError(f"{where}: not a V3 keystore (no crypto object)")
    if document.get("version") != 3:
        raise ConfigError(f"{where}: keystore version {document.get('version')!r}, expected 3")
    try:
        raw = bytes(Account.decrypt(document, password))
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise FailedPrecondition(
                f"{where}: wrong keystore password (MAC mismatch)"
            ) from None
        raise ConfigError(f"{where}: unusable keystore ({_safe_reason(exc)})") from None
    except (KeyError, TypeError, NotImplementedError) as exc:
        raise ConfigError(f"{where}: unusable keystore ({_safe_reason(exc)})") from None
    return parse_private_key(raw.hex(), where)


def _safe_reason(exc: BaseException) -> str:
    """The exception's class only: eth-keyfile messages may quote parameters of the file, and
    nothing here is worth the risk of quoting more."""
    return type(exc).__name__
