"""The embedded default that `wallet-signer serve` runs when no config is given.

A project-local SoftHSM token under `.wallet-signer/` holding a key labelled `default`, created
on first use and served on 127.0.0.1:50051 as key "default". The key stays in (soft) hardware;
SoftHSM is still software, so this is for development, not real funds. The env backend is used
only when configured.
"""

import logging
from pathlib import Path

from signer.admin import pkcs11_keys, softhsm
from signer.backends.pkcs11 import open_session, read_pin
from signer.config import Config, Pkcs11KeyConfig, ServerConfig

log = logging.getLogger(__name__)

DEV_KEY_LABEL = "default"


def development_config(state_dir: Path = softhsm.STATE_DIR) -> Config:
    token = softhsm.ensure_dev_token(state_dir)
    key = Pkcs11KeyConfig(
        backend="pkcs11", token_label=token.label, pin_file=token.pin_file, key_label=DEV_KEY_LABEL
    )
    if ensure_key(key):
        log.warning("created the development key %r in the SoftHSM token", DEV_KEY_LABEL)
    log.warning(
        "no --config given: serving the embedded DEVELOPMENT default, key 'default' in the "
        "SoftHSM token %r under %s", token.label, state_dir,
    )
    return Config(environment="development", server=ServerConfig(), keys={"default": key})


def ensure_key(key: Pkcs11KeyConfig) -> bool:
    """Generate the configured key on its token unless its label is in use; True if created."""
    assert key.key_label is not None
    pin = read_pin("default", key.pin_env, key.pin_file)
    with open_session(key.module, key.token_label, pin, rw=True) as session:
        if pkcs11_keys.label_in_use(session, key.key_label):
            return False
        pkcs11_keys.generate_key(session, key.key_label)
        return True
