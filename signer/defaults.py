"""The embedded default that `wallet-signer serve` runs when no config is given.

A development key generated once into `.wallet-signer/dev-key.hex` (mode 0600) under the current
directory, served on 127.0.0.1:50051 as key "default". Never for real funds.
"""

import logging
import os
import secrets
from pathlib import Path

from signer.config import Config, EnvKeyConfig, ServerConfig
from signer.eth.signature import SECP256K1_N

log = logging.getLogger(__name__)

STATE_DIR = Path(".wallet-signer")
DEV_KEY_FILE = STATE_DIR / "dev-key.hex"


def development_config(state_dir: Path = STATE_DIR) -> Config:
    key_file = state_dir / DEV_KEY_FILE.name
    if not key_file.exists():
        _generate_dev_key(key_file)
    log.warning(
        "no --config given: serving the embedded DEVELOPMENT default, key 'default' from %s",
        key_file,
    )
    return Config(
        environment="development",
        server=ServerConfig(),
        keys={"default": EnvKeyConfig(backend="env", private_key_file=key_file)},
    )


def _generate_dev_key(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = 0
    while not 0 < key < SECP256K1_N:
        key = int.from_bytes(secrets.token_bytes(32), "big")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"{key:064x}\n")
    log.warning("generated a development key in %s (mode 0600): not for real funds", path)
