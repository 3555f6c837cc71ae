"""Where `keys import` reads the private key it moves into an HSM or KMS: a hex key file or
stdin, a V3 keystore file, or a key already configured from a keystore, Vault or Secrets
Manager (`--from-key KEY_ID`). Never the command line. Errors name the source, never the key.
"""

from pathlib import Path
from typing import TextIO

from signer.config import (
    AwsSecretKeyConfig,
    Config,
    EnvKeyConfig,
    KeystoreKeyConfig,
    VaultKeyConfig,
)
from signer.errors import ConfigError, InvalidRequest
from signer.secret_sources import read_secret


def read_key_material(
    *, key_file: Path | None, from_keystore: Path | None, password_file: Path | None,
    password_env: str | None, from_key: str | None, config: Config | None, stdin: TextIO,
) -> tuple[bytes, str]:
    """(the 32-byte private key, where it came from)."""
    from signer.admin.pkcs11_keys import read_key_text
    from signer.backends.env import parse_private_key

    sources = [s for s in (key_file, from_keystore, from_key) if s is not None]
    if len(sources) > 1:
        raise InvalidRequest("--key-file, --from-keystore and --from-key: choose one")
    if (password_file or password_env) and from_keystore is None:
        raise InvalidRequest("--password-file and --password-env apply only with --from-keystore")
    if from_keystore is not None:
        from signer.backends.keystore import decrypt_keystore, read_keystore_file

        if (password_file is None) == (password_env is None):
            raise InvalidRequest("--from-keystore: give --password-file or --password-env")
        where = f"--from-keystore {from_keystore}"
        password = read_secret(where, "keystore password", password_env, password_file)
        key = decrypt_keystore(read_keystore_file(where, from_keystore), password, where)
        return key.secret, f"keystore {from_keystore}"
    if from_key is not None:
        return _configured_key(from_key, config), f"configured key {from_key!r}"
    text, source = read_key_text(key_file, stdin)
    return parse_private_key(text, f"private key from {source}").secret, source


def _configured_key(key_id: str, config: Config | None) -> bytes:
    """The key a `[keys.KEY_ID]` keystore, vault or aws-secret entry holds, read as serving
    would read it (the backend keeps it in memory; this admin command takes it from there)."""
    from signer.backends.env import EnvBackend
    from signer.keyload import open_backend

    if config is None:
        raise InvalidRequest("--from-key needs --config (the key's [keys] entry)")
    entry = config.keys.get(key_id)
    if entry is None:
        raise InvalidRequest(f"--from-key: no [keys.{key_id}] in the config")
    if not isinstance(entry, KeystoreKeyConfig | VaultKeyConfig | AwsSecretKeyConfig
                      | EnvKeyConfig):
        raise InvalidRequest(f"--from-key: keys.{key_id} is a {entry.backend} key, whose "
                             "private key cannot be read")
    backend = open_backend(key_id, entry)
    try:
        if not isinstance(backend, EnvBackend):  # pragma: no cover - the kinds above are
            raise ConfigError(f"keys.{key_id}: not an in-memory key")
        return bytes(backend._key.secret)  # the one admin read of a memory backend's key
    finally:
        backend.close()
