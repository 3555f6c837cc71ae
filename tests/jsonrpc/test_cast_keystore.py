"""Keystores written by foundry's `cast wallet new` open in the keystore backend, singly and as a
`[key_sources]` folder (cast names its files by uuid, without `.json`), and sign an EIP-191
message byte for byte as `cast wallet sign` does with the same keystore."""

import re
import subprocess

from signer.config import KeystoreKeyConfig, validate
from signer.keyload import open_backend
from signer.service import KeyRing
from signer.wallet import WalletSigner
from tests.jsonrpc.conftest import Tools

PASSWORD = "cast keystore password"


def _cast(tools: Tools, *args: str) -> str:
    done = subprocess.run([str(tools.cast), *args], capture_output=True, text=True, timeout=60,
                          check=True)
    return done.stdout


def test_cast_wallet_new_keystore_opens_and_signs_like_cast(tools: Tools, tmp_path):
    folder = tmp_path / "keystores"
    folder.mkdir()
    out = _cast(tools, "wallet", "new", str(folder), "--unsafe-password", PASSWORD)
    path = re.search(r"keystore file: (\S+)", out).group(1)  # type: ignore[union-attr]
    address = re.search(r"Address:\s+(0x[0-9a-fA-F]{40})", out).group(1)  # type: ignore[union-attr]
    (tmp_path / "pw").write_text(PASSWORD)

    config = KeystoreKeyConfig(backend="keystore", keystore_file=path,
                               password_file=tmp_path / "pw")
    signer = WalletSigner("cast", open_backend("cast", config))
    assert signer.address == address
    theirs = _cast(tools, "wallet", "sign", "--keystore", path, "--password", PASSWORD,
                   "hello from cast").strip()
    assert "0x" + signer.sign_message(b"hello from cast").signature.hex() == theirs

    keyring = KeyRing.from_config(validate({"key_sources": {"cast": {
        "backend": "keystore", "folder": str(folder), "password_file": str(tmp_path / "pw")}}},
        "t"))
    assert [(s.key_id, s.address) for s in keyring] == [(path.rsplit("/", 1)[1], address)]
    keyring.close()
