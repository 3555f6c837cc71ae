"""`keys import` from a keystore file or a configured Vault / Secrets Manager key into an HSM
(SoftHSM, real) and into KMS (the KMS emulator's GetParametersForImport / ImportKeyMaterial,
written after AWS's API reference since moto has neither; not AWS itself).
The key never appears on the command line, in the output or in an error."""

import io
import json
import tomllib
import uuid

import pytest
from eth_account import Account

from signer import cli
from signer.admin import kms_keys
from signer.admin.kms_keys import wrap_key_material
from signer.backends.kms import parse_public_key_reply
from signer.config import validate
from signer.eth.fields import address_of
from signer.service import KeyRing
from tests.support.eth_transactions import assert_signs_like_eth_account
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
    """What ImportKeyMaterial receives, opened with a wrapping key made here rather than by the
    emulator (so this does not rest on the emulator's unwrap): exactly the key, as PKCS#8 DER."""
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


# --- into KMS: the real CLI and boto3 against the emulator's GetParametersForImport and
# ImportKeyMaterial (tests/support/kms_emulator.py, after AWS's API reference; not AWS) -------


def _import_kms(endpoint_url, alias, *args):
    return cli.main(["keys", "import", "--backend", "kms", "--alias", alias, "--region", REGION,
                     "--endpoint-url", endpoint_url, *args])


@pytest.fixture
def key_source(tmp_path, env_key, monkeypatch):
    """key_source(kind) -> the `keys import` arguments that read env_key from that kind."""

    def arguments(kind):
        (tmp_path / "k.json").write_text(json.dumps(cheap_keystore(env_key)))
        (tmp_path / "pw").write_text(PASSWORD)
        if kind == "keystore":
            return ["--from-keystore", str(tmp_path / "k.json"),
                    "--password-file", str(tmp_path / "pw")]
        if kind == "key-file":
            (tmp_path / "key").write_text(env_key + "\n")
            return ["--key-file", str(tmp_path / "key")]
        if kind == "from-key":
            (tmp_path / "signer.toml").write_text(
                f'[keys.src]\nbackend = "keystore"\nkeystore_file = "{tmp_path / "k.json"}"\n'
                f'password_file = "{tmp_path / "pw"}"\n')
            return ["--config", str(tmp_path / "signer.toml"), "--from-key", "src"]
        monkeypatch.setattr("sys.stdin", io.StringIO(env_key))
        return []

    return arguments


def _no_secret(env_key, *texts):
    for text in texts:
        assert env_key.removeprefix("0x").lower() not in text.lower()


@pytest.mark.parametrize("kind", ["keystore", "key-file", "from-key", "stdin"])
def test_kms_import_makes_a_key_that_signs_like_eth_account(kms_emulator, kms_admin_client,
                                                             key_source, env_key, kind, capsys,
                                                             caplog):
    alias = f"imported-{uuid.uuid4().hex[:8]}"
    code = _import_kms(kms_emulator.endpoint_url, alias, *key_source(kind))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    _no_secret(env_key, captured.out, captured.err, caplog.text)
    address = Account.from_key(env_key).address
    assert f"address: {address}" in captured.out

    meta = kms_admin_client.describe_key(KeyId=f"alias/{alias}")["KeyMetadata"]
    assert f"imported into KMS key {meta['Arn']}" in captured.out
    assert (meta["Origin"], meta["KeyState"], meta["KeySpec"], meta["KeyUsage"]) == (
        "EXTERNAL", "Enabled", "ECC_SECG_P256K1", "SIGN_VERIFY")
    reply = kms_admin_client.get_public_key(KeyId=meta["KeyId"])
    assert address_of(parse_public_key_reply(reply, alias)[1]) == address

    # the stanza the command printed, served as is: the KMS key signs as the key itself does
    # (KMS's ECDSA nonces are random, eth-account's RFC 6979: all but (v, r, s) byte-identical)
    stanza = tomllib.loads(captured.out[captured.out.index("[keys."):])
    assert stanza["keys"][alias]["kms_key_id"] == f"alias/{alias}"
    keyring = KeyRing.from_config(validate(stanza, "printed stanza"))
    assert_signs_like_eth_account(keyring.get(alias), env_key, deterministic=False)


def test_kms_import_refuses_an_alias_in_use_before_making_a_key(kms_emulator, kms_admin_client,
                                                                 key_source, capsys):
    alias = f"taken-{uuid.uuid4().hex[:8]}"
    assert cli.main(["keys", "create", "--backend", "kms", "--alias", alias, "--region", REGION,
                     "--endpoint-url", kms_emulator.endpoint_url]) == 0
    capsys.readouterr()
    keys_before = len(kms_admin_client.list_keys()["Keys"])
    assert _import_kms(kms_emulator.endpoint_url, alias, *key_source("key-file")) == 2
    assert f"alias/{alias} already exists" in capsys.readouterr().err
    assert len(kms_admin_client.list_keys()["Keys"]) == keys_before


def _p256_material(public_key_der):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    return wrap_material(other, public_key_der)


def wrap_material(material, public_key_der):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    return serialization.load_der_public_key(public_key_der).encrypt(material, oaep)


# Each interferes, through botocore's event hooks on the CLI's own client, with the request the
# command is about to send; the emulator then refuses it as AWS documents.
def _token_for_another_key(admin, params, seen):
    other = admin.create_key(KeySpec="ECC_SECG_P256K1", KeyUsage="SIGN_VERIFY",
                             Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    params["ImportToken"] = admin.get_parameters_for_import(
        KeyId=other, WrappingAlgorithm="RSAES_OAEP_SHA_256",
        WrappingKeySpec="RSA_2048")["ImportToken"]


def _not_secp256k1(admin, params, seen):
    params["EncryptedKeyMaterial"] = _p256_material(seen["PublicKey"])


def _imported_meanwhile(admin, params, seen):
    """Another operator imports other key material into the key first."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    theirs = ec.generate_private_key(ec.SECP256K1()).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    own = admin.get_parameters_for_import(KeyId=params["KeyId"],
                                          WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                          WrappingKeySpec="RSA_2048")
    admin.import_key_material(KeyId=params["KeyId"], ImportToken=own["ImportToken"],
                              EncryptedKeyMaterial=wrap_material(theirs, own["PublicKey"]),
                              ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")


def _deleted_meanwhile(admin, params, seen):
    admin.schedule_key_deletion(KeyId=params["KeyId"], PendingWindowInDays=7)


@pytest.mark.parametrize(("operation", "interfere", "code"), [
    ("ImportKeyMaterial", _token_for_another_key, "InvalidImportTokenException"),
    ("ImportKeyMaterial", _not_secp256k1, "IncorrectKeyMaterialException"),
    ("ImportKeyMaterial", _imported_meanwhile, "IncorrectKeyMaterialException"),
    ("ImportKeyMaterial", _deleted_meanwhile, "KMSInvalidStateException"),
    ("GetParametersForImport", _deleted_meanwhile, "KMSInvalidStateException"),
], ids=["token-for-another-key", "not-secp256k1", "already-imported", "pending-deletion",
        "pending-deletion-before-parameters"])
def test_a_refused_import_names_the_call_and_gives_the_key_back(kms_faults, kms_admin_client,
                                                                key_source, env_key, operation,
                                                                interfere, code, capsys, caplog):
    client = kms_keys._client(REGION, kms_faults.endpoint_url)  # the one the command will use
    seen = {}
    made = []

    def remember(parsed, **_):
        seen.update(parsed)

    def tamper(params, **_):
        made.append(params["KeyId"])
        interfere(kms_admin_client, params, seen)

    client.meta.events.register("after-call.kms.GetParametersForImport", remember)
    client.meta.events.register(f"before-parameter-build.kms.{operation}", tamper)
    alias = f"refused-{uuid.uuid4().hex[:8]}"
    exit_code = _import_kms(kms_faults.endpoint_url, alias, *key_source("keystore"))
    captured = capsys.readouterr()
    assert exit_code == 3, captured.err
    assert f"KMS {operation} failed ({code})" in captured.err
    (key_id,) = made
    assert f"the half-made KMS key {key_id} is scheduled for deletion in 7 days" in captured.err
    assert captured.out == ""
    _no_secret(env_key, captured.err, caplog.text)
    assert kms_admin_client.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == (
        "PendingDeletion")
    with pytest.raises(kms_admin_client.exceptions.NotFoundException):
        kms_admin_client.describe_key(KeyId=f"alias/{alias}")


def test_a_failed_clean_up_does_not_hide_the_failure(kms_faults, kms_admin_client, key_source,
                                                     capsys):
    """IAM may allow the import but not kms:ScheduleKeyDeletion (faults injected in front of the
    emulator): the command still names the failure, and says the key is left for the operator."""
    kms_faults.add_fault(operation="ImportKeyMaterial", error="AccessDeniedException")
    kms_faults.add_fault(operation="ScheduleKeyDeletion", error="AccessDeniedException")
    assert _import_kms(kms_faults.endpoint_url, f"left-{uuid.uuid4().hex[:8]}",
                       *key_source("key-file")) == 3
    err = capsys.readouterr().err
    assert "KMS ImportKeyMaterial denied (AccessDeniedException)" in err
    left = err.split("the half-made KMS key ")[1].split()[0]
    assert "could not be scheduled for deletion" in err and "schedule it yourself" in err
    assert "ScheduleKeyDeletion denied" in err
    assert kms_admin_client.describe_key(KeyId=left)["KeyMetadata"]["KeyState"] == "PendingImport"


def test_an_expired_import_token_is_refused_and_the_key_given_back(kms_emulator, key_source,
                                                                   env_key, capsys):
    """A second emulator whose import tokens expire at once (AWS: after 24 hours)."""
    import boto3

    from signer.backends import kms
    from tests.support.kms_emulator import Emulator

    with Emulator.start(import_token_seconds=0) as short:
        try:
            assert _import_kms(short.endpoint_url, "expired", *key_source("key-file")) == 3
            err = capsys.readouterr().err
            assert "KMS ImportKeyMaterial failed (ExpiredImportTokenException)" in err
            assert "run the import again" in err
            _no_secret(env_key, err)
            admin = boto3.session.Session().client("kms", region_name=REGION,
                                                   endpoint_url=short.endpoint_url)
            (key,) = admin.list_keys()["Keys"]
            assert admin.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == (
                "PendingDeletion")
        finally:
            kms.reset_clients()


def test_the_import_command_takes_no_key_argument(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["keys", "import", "--backend", "kms", "0x" + "11" * 32])
    assert exited.value.code == 2
    assert "11" * 32 not in capsys.readouterr().err
