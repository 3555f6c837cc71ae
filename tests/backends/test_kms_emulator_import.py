"""Guards the emulator's key import (tests/support/kms_emulator.py `apply_key_import`): the
project's implementation of GetParametersForImport and ImportKeyMaterial as AWS's KMS API
reference documents them, since moto 5.2.5 has neither. It is not AWS: these tests check that it
behaves as the documentation says, so that `keys import --backend kms` cannot go green on an
emulator that accepts what AWS refuses. The wrapping here is written independently of
signer.admin (RSA-OAEP, and RSA-OAEP of an AES-256 key then RFC 5649 key wrap with padding), and
signatures are checked with `cryptography` against our own key, never the emulator's Verify.
"""

import os
import time

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from eth_utils import keccak

HASHES = {"SHA_1": hashes.SHA1, "SHA_256": hashes.SHA256}


def _external_key(client, spec="ECC_SECG_P256K1"):
    return client.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY",
                             Origin="EXTERNAL")["KeyMetadata"]["KeyId"]


def _parameters(client, key_id, algorithm="RSAES_OAEP_SHA_256", spec="RSA_2048"):
    return client.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm=algorithm,
                                            WrappingKeySpec=spec)


def _pkcs8(key, form=serialization.PrivateFormat.PKCS8):
    return key.private_bytes(serialization.Encoding.DER, form, serialization.NoEncryption())


def _wrap(material, public_der, algorithm="RSAES_OAEP_SHA_256"):
    wrapping = serialization.load_der_public_key(public_der)
    assert isinstance(wrapping, rsa.RSAPublicKey)
    digest = HASHES["SHA_256" if algorithm.endswith("SHA_256") else "SHA_1"]()
    oaep = padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)
    if algorithm.startswith("RSAES_OAEP"):
        return wrapping.encrypt(material, oaep)
    aes_key = os.urandom(32)
    return wrapping.encrypt(aes_key, oaep) + keywrap.aes_key_wrap_with_padding(aes_key, material)


def _import(client, key_id, material, parameters=None, algorithm="RSAES_OAEP_SHA_256", **extra):
    parameters = parameters or _parameters(client, key_id, algorithm)
    fields = {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE", **extra}
    return client.import_key_material(
        KeyId=key_id, ImportToken=parameters["ImportToken"],
        EncryptedKeyMaterial=_wrap(material, parameters["PublicKey"], algorithm), **fields)


def _refused(call, code):
    with pytest.raises(ClientError) as caught:
        call()
    assert caught.value.response["Error"]["Code"] == code, caught.value
    return str(caught.value)


def _state(client, key_id):
    return client.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"]


def test_an_external_key_has_no_key_material_until_imported(kms_admin_client):
    key_id = _external_key(kms_admin_client)
    meta = kms_admin_client.describe_key(KeyId=key_id)["KeyMetadata"]
    assert (meta["Origin"], meta["KeyState"], meta["Enabled"]) == ("EXTERNAL", "PendingImport",
                                                                    False)
    for call in (lambda: kms_admin_client.get_public_key(KeyId=key_id),
                 lambda: kms_admin_client.sign(KeyId=key_id, Message=b"\x01" * 32,
                                               MessageType="DIGEST",
                                               SigningAlgorithm="ECDSA_SHA_256"),
                 lambda: kms_admin_client.enable_key(KeyId=key_id)):
        assert "pending import" in _refused(call, "KMSInvalidStateException")


@pytest.mark.parametrize(("spec", "algorithm"), [
    ("RSA_2048", "RSAES_OAEP_SHA_256"), ("RSA_3072", "RSA_AES_KEY_WRAP_SHA_256"),
    ("RSA_2048", "RSAES_OAEP_SHA_1"), ("RSA_4096", "RSA_AES_KEY_WRAP_SHA_1"),
])
def test_imported_material_is_what_signs(kms_admin_client, spec, algorithm):
    key_id = _external_key(kms_admin_client)
    before = time.time()
    parameters = _parameters(kms_admin_client, key_id, algorithm, spec)
    after = time.time()
    assert parameters["KeyId"].endswith(f":key/{key_id}")
    valid_to = parameters["ParametersValidTo"].timestamp()  # 24 hours after the call
    assert before + 24 * 3600 - 0.01 <= valid_to <= after + 24 * 3600 + 0.01
    wrapping = serialization.load_der_public_key(parameters["PublicKey"])
    assert isinstance(wrapping, rsa.RSAPublicKey) and wrapping.key_size == int(spec[4:])

    ours = ec.generate_private_key(ec.SECP256K1())
    reply = _import(kms_admin_client, key_id, _pkcs8(ours), parameters, algorithm)
    assert reply["KeyId"] == parameters["KeyId"]
    meta = kms_admin_client.describe_key(KeyId=key_id)["KeyMetadata"]
    assert (meta["KeyState"], meta["Enabled"], meta["ExpirationModel"]) == (
        "Enabled", True, "KEY_MATERIAL_DOES_NOT_EXPIRE")
    public = kms_admin_client.get_public_key(KeyId=key_id)["PublicKey"]
    assert public == ours.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = keccak(b"imported")
    signature = kms_admin_client.sign(KeyId=key_id, Message=digest, MessageType="DIGEST",
                                      SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    ours.public_key().verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))


@pytest.mark.parametrize(("material", "says"), [
    (lambda: _pkcs8(ec.generate_private_key(ec.SECP256R1())), "not a ECC_SECG_P256K1"),
    (lambda: _pkcs8(ec.generate_private_key(ec.SECP256K1()),
                    serialization.PrivateFormat.TraditionalOpenSSL), "not a DER-encoded PKCS #8"),
    (lambda: os.urandom(32), "not a DER-encoded PKCS #8"),
    (lambda: _pkcs8(rsa.generate_private_key(65537, 1024)), "not a ECC_SECG_P256K1"),
], ids=["p256", "sec1", "raw-scalar", "rsa"])
def test_material_that_is_not_a_pkcs8_secp256k1_key_is_refused(kms_admin_client, material, says):
    key_id = _external_key(kms_admin_client)
    # RSA_AES wrapping: any size of material fits (RSA material must use it, at AWS too)
    message = _refused(lambda: _import(kms_admin_client, key_id, material(),
                                       algorithm="RSA_AES_KEY_WRAP_SHA_256"),
                       "IncorrectKeyMaterialException")
    assert says in message
    assert _state(kms_admin_client, key_id) == "PendingImport"


def test_tokens_are_bound_to_their_key_and_algorithm(kms_admin_client):
    key_id, other = _external_key(kms_admin_client), _external_key(kms_admin_client)
    material = _pkcs8(ec.generate_private_key(ec.SECP256K1()))
    others = _parameters(kms_admin_client, other)
    _refused(lambda: _import(kms_admin_client, key_id, material, others),
             "InvalidImportTokenException")
    forged = dict(others, ImportToken=os.urandom(64))
    _refused(lambda: _import(kms_admin_client, other, material, forged),
             "InvalidImportTokenException")
    # wrapped with SHA-1 OAEP under a token issued for SHA-256: KMS cannot decrypt it
    sha256 = _parameters(kms_admin_client, key_id, "RSAES_OAEP_SHA_256")
    _refused(lambda: kms_admin_client.import_key_material(
        KeyId=key_id, ImportToken=sha256["ImportToken"],
        EncryptedKeyMaterial=_wrap(material, sha256["PublicKey"], "RSAES_OAEP_SHA_1"),
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE"), "InvalidCiphertextException")
    assert _state(kms_admin_client, key_id) == _state(kms_admin_client, other) == "PendingImport"


def test_only_external_keys_in_an_importable_state_take_parameters(kms_admin_client,
                                                                   make_kms_key):
    generated = make_kms_key()
    assert "origin is AWS_KMS" in _refused(lambda: _parameters(kms_admin_client, generated),
                                           "UnsupportedOperationException")
    key_id = _external_key(kms_admin_client)
    _refused(lambda: _parameters(kms_admin_client, key_id, "RSAES_PKCS1_V1_5"),
             "UnsupportedOperationException")
    _refused(lambda: _parameters(kms_admin_client, key_id, spec="RSA_1024"),
             "ValidationException")
    parameters = _parameters(kms_admin_client, key_id)
    kms_admin_client.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    material = _pkcs8(ec.generate_private_key(ec.SECP256K1()))
    _refused(lambda: _parameters(kms_admin_client, key_id), "KMSInvalidStateException")
    assert "pending deletion" in _refused(
        lambda: _import(kms_admin_client, key_id, material, parameters),
        "KMSInvalidStateException")


def test_expiration_model_and_valid_to_go_together(kms_admin_client):
    key_id = _external_key(kms_admin_client)
    material = _pkcs8(ec.generate_private_key(ec.SECP256K1()))
    parameters = _parameters(kms_admin_client, key_id)
    _refused(lambda: kms_admin_client.import_key_material(  # default model: KEY_MATERIAL_EXPIRES
        KeyId=key_id, ImportToken=parameters["ImportToken"],
        EncryptedKeyMaterial=_wrap(material, parameters["PublicKey"])), "ValidationException")
    _refused(lambda: _import(kms_admin_client, key_id, material, parameters,
                             ValidTo=time.time() + 3600), "ValidationException")
    _import(kms_admin_client, key_id, material, parameters, ExpirationModel="KEY_MATERIAL_EXPIRES",
            ValidTo=time.time() + 3600)
    meta = kms_admin_client.describe_key(KeyId=key_id)["KeyMetadata"]
    assert (meta["KeyState"], meta["ExpirationModel"]) == ("Enabled", "KEY_MATERIAL_EXPIRES")


def test_an_imported_key_takes_only_its_own_material_again(kms_admin_client):
    key_id = _external_key(kms_admin_client)
    first = ec.generate_private_key(ec.SECP256K1())
    _import(kms_admin_client, key_id, _pkcs8(first))
    _import(kms_admin_client, key_id, _pkcs8(first))  # reimport of the same material: allowed
    message = _refused(lambda: _import(kms_admin_client, key_id,
                                       _pkcs8(ec.generate_private_key(ec.SECP256K1()))),
                       "IncorrectKeyMaterialException")
    assert "cannot change" in message
    assert kms_admin_client.get_public_key(KeyId=key_id)["PublicKey"] == first.public_key(
        ).public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
