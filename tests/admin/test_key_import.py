"""`keys import` from a keystore file or a configured Vault / Secrets Manager key into an HSM
(SoftHSM, real) and into KMS (the wrapping is checked locally; moto cannot import, see below).
The key never appears on the command line, in the output or in an error."""

import json

import pytest
from eth_account import Account

from signer import cli
from signer.admin.kms_keys import wrap_key_material
from tests.support.fixtures_kms import REGION
from tests.support.fixtures_pkcs11 import stanza_signer
from tests.support.fixtures_sources import PASSWORD, cheap_keystore


def _import_pkcs11(token, *args):
    return cli.main(["keys", "import", "--backend", "pkcs11", "--token-label", token.label,
                     "--pin-file", str(token.pin_file), *args])


def test_import_a_keystore_into_the_hsm(softhsm_token, tmp_path, env_key, capsys):
    (tmp_path / "k.json").write_text(json.dumps(cheap_keystore(env_key)))
    (tmp_path / "pw").write_text(PASSWORD)
    assert _import_pkcs11(softhsm_token, "--label", "from-keystore", "--from-keystore",
                          str(tmp_path / "k.json"), "--password-file", str(tmp_path / "pw")) == 0
    captured = capsys.readouterr()
    assert env_key.removeprefix("0x") not in captured.out + captured.err
    assert Account.from_key(env_key).address in captured.out
    signer = stanza_signer(captured.out, "from-keystore")
    try:
        assert signer.address == Account.from_key(env_key).address
        signer.self_test()
    finally:
        signer.backend.close()


def test_a_wrong_keystore_password_imports_nothing(softhsm_token, tmp_path, env_key, capsys):
    (tmp_path / "k.json").write_text(json.dumps(cheap_keystore(env_key)))
    (tmp_path / "pw").write_text("wrong")
    assert _import_pkcs11(softhsm_token, "--label", "x", "--from-keystore",
                          str(tmp_path / "k.json"), "--password-file", str(tmp_path / "pw")) == 3
    assert "wrong keystore password" in capsys.readouterr().err
    assert _import_pkcs11(softhsm_token, "--label", "x", "--password-file",
                          str(tmp_path / "pw")) == 2
    assert "only with --from-keystore" in capsys.readouterr().err


def test_import_a_vault_key_into_the_hsm(softhsm_token, openbao, approle, vault_secret, env_key,
                                         tmp_path, capsys):
    role = approle()
    path = vault_secret({"private_key": env_key})
    config = tmp_path / "signer.toml"
    config.write_text(f"""
[keys.agent]
backend = "vault"
url = "{openbao.url}"
path = "{path}"
role_id_file = "{role.role_id_file}"
secret_id_file = "{role.secret_id_file}"
""")
    assert _import_pkcs11(softhsm_token, "--config", str(config), "--label", "from-vault",
                          "--from-key", "agent") == 0
    captured = capsys.readouterr()
    assert env_key.removeprefix("0x") not in captured.out + captured.err
    signer = stanza_signer(captured.out, "from-vault")
    try:
        assert signer.address == Account.from_key(env_key).address
    finally:
        signer.backend.close()


def test_an_hsm_key_cannot_be_a_source(softhsm_token, tmp_path, capsys):
    config = tmp_path / "signer.toml"
    config.write_text(f'[keys.h]\nbackend = "pkcs11"\ntoken_label = "{softhsm_token.label}"\n'
                      f'pin_file = "{softhsm_token.pin_file}"\nkey_label = "h"\n')
    assert _import_pkcs11(softhsm_token, "--config", str(config), "--label", "y",
                          "--from-key", "h") == 2
    assert "cannot be read" in capsys.readouterr().err


def test_kms_key_material_is_pkcs8_wrapped_with_rsa_oaep_sha256(env_key):
    """What ImportKeyMaterial receives, opened with the wrapping key's private half: exactly
    the key, as PKCS#8 DER. (moto 5 has no GetParametersForImport / ImportKeyMaterial, so the
    wrapping key here is made locally, as KMS makes one: RSA 4096.)"""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    wrapping = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    public_der = wrapping.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    secret = bytes.fromhex(env_key.removeprefix("0x"))
    wrapped = wrap_key_material(secret, public_der)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    key = serialization.load_der_private_key(wrapping.decrypt(wrapped, oaep), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256k1"
    assert key.private_numbers().private_value == int.from_bytes(secret, "big")


def test_kms_import_against_moto_fails_cleanly_and_leaves_no_key(kms_emulator, kms_admin_client,
                                                                 env_key, monkeypatch, capsys):
    """moto does not implement GetParametersForImport: the command must say which call failed,
    exit 3, echo no key, and schedule the half-made EXTERNAL key for deletion."""
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(env_key))
    code = cli.main(["keys", "import", "--backend", "kms", "--alias", "imported-x",
                     "--region", REGION, "--endpoint-url", kms_emulator.endpoint_url])
    captured = capsys.readouterr()
    assert code in (2, 3), captured.err
    assert "GetParametersForImport" in captured.err
    assert env_key.removeprefix("0x") not in captured.out + captured.err
    external = [k["KeyId"] for k in kms_admin_client.list_keys()["Keys"]
                if kms_admin_client.describe_key(KeyId=k["KeyId"])["KeyMetadata"].get("Origin")
                == "EXTERNAL"]
    states = {kms_admin_client.describe_key(KeyId=k)["KeyMetadata"]["KeyState"] for k in external}
    assert states <= {"PendingDeletion"}


def test_the_import_command_takes_no_key_argument(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["keys", "import", "--backend", "kms", "0x" + "11" * 32])
    assert exited.value.code == 2
    assert "11" * 32 not in capsys.readouterr().err
