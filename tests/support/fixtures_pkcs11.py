"""PKCS#11 (SoftHSM) fixtures: every test gets its own throwaway token directory.

`softhsm_token` runs softhsm/setup-token.sh into tmp_path and points SOFTHSM2_CONF at it;
`pkcs11_signer` is a WalletSigner on a fresh key generated inside that token.
"""

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from signer.config import SOFTHSM_MODULE, Pkcs11KeyConfig
from signer.wallet import WalletSigner
from tests.conftest import skip_or_fail

SETUP_SCRIPT = Path(__file__).resolve().parents[2] / "softhsm" / "setup-token.sh"
TOKEN_LABEL = "test-token"
# a known private key for tests that import one (fault and health tests)
SECRET = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")


@dataclass
class SoftHsmToken:
    state_dir: Path
    label: str
    conf: Path
    pin_file: Path
    so_pin_file: Path

    @property
    def pin(self) -> str:
        return self.pin_file.read_text().strip()

    def key_config(self, key_label: str, **options: object) -> Pkcs11KeyConfig:
        return Pkcs11KeyConfig(backend="pkcs11", token_label=self.label, pin_file=self.pin_file,
                               key_label=key_label, **options)  # type: ignore[arg-type]

    def setup(self) -> None:
        """(Re-)create the token with setup-token.sh (keeps the PIN files)."""
        subprocess.run(["bash", str(SETUP_SCRIPT), str(self.state_dir), self.label],
                       check=True, capture_output=True)

    def delete(self) -> None:
        run = subprocess.run(["softhsm2-util", "--delete-token", "--token", self.label],
                             capture_output=True, text=True)
        if run.returncode != 0:
            # A process using the token may write a file into its directory while
            # softhsm2-util removes it ("Could not delete the directory"): finish the job.
            assert "Could not delete the directory" in run.stdout + run.stderr, run.stderr
            for directory in (self.state_dir / "tokens").iterdir():
                for _ in range(50):
                    shutil.rmtree(directory, ignore_errors=True)
                    if not directory.exists():
                        break
                    time.sleep(0.01)
                assert not directory.exists()


def require_softhsm() -> None:
    if not SOFTHSM_MODULE.is_file() or shutil.which("softhsm2-util") is None:
        skip_or_fail("pkcs11", "softhsm2 is not installed (apt-get install softhsm2)")
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        skip_or_fail("pkcs11", "python-pkcs11 is not installed (pip install '.[pkcs11]')")


@pytest.fixture
def softhsm_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsmToken:
    require_softhsm()
    state_dir = tmp_path / "softhsm"
    token = SoftHsmToken(state_dir, TOKEN_LABEL, state_dir / "softhsm2.conf",
                         state_dir / "user-pin", state_dir / "so-pin")
    token.setup()
    monkeypatch.setenv("SOFTHSM2_CONF", str(token.conf))
    assert os.stat(token.pin_file).st_mode & 0o077 == 0
    return token


def generate_key(token: SoftHsmToken, label: str) -> bytes:
    """A new key pair in `token` through the provisioning code; returns the public key."""
    from signer.admin import pkcs11_keys
    from signer.backends.pkcs11 import open_session

    with open_session(SOFTHSM_MODULE, token.label, token.pin, rw=True) as session:
        return pkcs11_keys.generate_key(session, label)[1]


def open_signer(token: SoftHsmToken, key_label: str, key_id: str = "hsm",
                **options: object) -> WalletSigner:
    from signer.backends.pkcs11 import Pkcs11Backend

    return WalletSigner(key_id, Pkcs11Backend.open(key_id, token.key_config(key_label, **options)))


@pytest.fixture
def pkcs11_signer(softhsm_token: SoftHsmToken) -> Iterator[WalletSigner]:
    generate_key(softhsm_token, "test-key")
    signer = open_signer(softhsm_token, "test-key")
    yield signer
    signer.backend.close()


# --- tokens changed underneath a serving key (fault and health tests) ----------------------


def import_key(token, label, secret):
    """Import `secret` under `label` into the token from this process."""
    from signer.admin import pkcs11_keys
    from signer.backends import pkcs11 as backend_module

    with backend_module.open_session(SOFTHSM_MODULE, token.label, token.pin, rw=True) as session:
        return pkcs11_keys.store_private_key(session, label, secret)[1]


def recreate_token_in_other_process(token, label, secret):
    """softhsm2-util runs in its own process; the key goes in through a child process too, so
    this process's library keeps its stale view until the backend recovers."""
    token.delete()
    time.sleep(0.2)
    create_token_in_other_process(token, label, secret)


def create_token_in_other_process(token, label, secret):
    """setup-token.sh, then the key imported by a child process (see above)."""
    import subprocess
    import sys

    token.setup()
    if secret is not None:
        code = ("import sys; from signer.backends import pkcs11 as p; "
                "from signer.admin import pkcs11_keys as a\n"
                "with p.open_session(p.Path('/usr/lib/softhsm/libsofthsm2.so'), sys.argv[1], "
                "sys.argv[2], rw=True) as s:\n"
                "    a.store_private_key(s, sys.argv[3], bytes.fromhex(sys.argv[4]))")
        subprocess.run([sys.executable, "-c", code, token.label, token.pin, label, secret.hex()],
                       check=True, capture_output=True, timeout=30)


def stanza_signer(output, key_id):
    """Open a backend from the config stanza the CLI printed: it must be usable as is."""
    import tomllib

    from signer.config import Config

    stanza = output[output.index(f"[keys.{key_id}]"):]
    config = Config.model_validate(tomllib.loads(stanza))
    from signer.backends.pkcs11 import Pkcs11Backend

    return WalletSigner(key_id, Pkcs11Backend.open(key_id, config.keys[key_id]))
