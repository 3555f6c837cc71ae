"""The project-local SoftHSM token of development (`.wallet-signer/`): created by
`softhsm/setup-token.sh` with its PINs in 0600 files, never in the system-wide token store."""

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from signer.errors import ConfigError

log = logging.getLogger(__name__)

STATE_DIR = Path(".wallet-signer")
DEV_TOKEN_LABEL = "wallet-signer"  # noqa: S105 - a token label, not a secret
SETUP_SCRIPT = Path(__file__).resolve().parent.parent.parent / "softhsm" / "setup-token.sh"


@dataclass(frozen=True)
class DevToken:
    label: str
    conf: Path
    pin_file: Path


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
