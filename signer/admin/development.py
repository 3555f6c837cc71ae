"""The embedded default that `wallet-signer serve` runs when no config is given.

A project-local SoftHSM token under `.wallet-signer/` (created by `softhsm/setup-token.sh`, PINs
in 0600 files) holding a key labelled `default`, created on first use and served on
127.0.0.1:50051 as key "default". The key stays in (soft) hardware; SoftHSM is still software,
so this is for development, not real funds. The env backend is used only when configured.
"""

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from signer.config import Config, Pkcs11KeyConfig, ServerConfig
from signer.errors import ConfigError

log = logging.getLogger(__name__)

STATE_DIR = Path(".wallet-signer")
DEV_TOKEN_LABEL = "wallet-signer"  # noqa: S105 - a token label, not a secret
DEV_KEY_LABEL = "default"
SETUP_SCRIPT = Path(__file__).resolve().parent.parent / "softhsm" / "setup-token.sh"


@dataclass(frozen=True)
class DevToken:
    label: str
    conf: Path
    pin_file: Path


def development_config(state_dir: Path = STATE_DIR) -> Config:
    token = ensure_dev_token(state_dir)
    key = Pkcs11KeyConfig(
        backend="pkcs11", token_label=token.label, pin_file=token.pin_file, key_label=DEV_KEY_LABEL
    )
    _ensure_key(key)
    log.warning(
        "no --config given: serving the embedded DEVELOPMENT default, key 'default' in the "
        "SoftHSM token %r under %s", token.label, state_dir,
    )
    return Config(environment="development", server=ServerConfig(), keys={"default": key})


def ensure_dev_token(state_dir: Path = STATE_DIR, label: str = DEV_TOKEN_LABEL) -> DevToken:
    """Create the project-local token if needed and point SOFTHSM2_CONF at it (before the
    library is loaded: SoftHSM reads it in C_Initialize)."""
    state_dir = state_dir.resolve()
    conf = state_dir / "softhsm2.conf"
    if not (state_dir / "tokens").is_dir() or not conf.is_file():
        if not SETUP_SCRIPT.is_file() or shutil.which("bash") is None:
            raise ConfigError(
                f"no SoftHSM token in {state_dir} and no {SETUP_SCRIPT} to create one: run from "
                "a source checkout, or pass --config"
            )
        result = subprocess.run(  # noqa: S603 - fixed script, arguments are paths we chose
            ["bash", str(SETUP_SCRIPT), str(state_dir), label],  # noqa: S607
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise ConfigError(f"SoftHSM token set-up failed: {result.stderr.strip()}")
        log.warning("%s", result.stdout.strip())
    os.environ["SOFTHSM2_CONF"] = str(conf)
    return DevToken(label, conf, state_dir / "user-pin")


def _ensure_key(key: Pkcs11KeyConfig) -> None:
    from signer.backends import pkcs11, pkcs11_admin

    assert key.key_label is not None
    pin = pkcs11.read_pin("default", key.pin_env, key.pin_file)
    connection = pkcs11.connect(key.module, key.token_label, pin)
    try:
        with connection.library.gate.shared():
            session = connection.open_session(rw=True)
            try:
                if not pkcs11_admin.label_in_use(session, key.key_label):
                    pkcs11_admin.generate_key(session, key.key_label)
                    log.warning("created the development key %r in the SoftHSM token",
                                key.key_label)
            finally:
                session.close()
    finally:
        pkcs11.disconnect(connection)
