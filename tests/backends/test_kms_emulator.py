"""Guards the emulator itself: if moto's DIGEST handling is wrong, these fail, so the KMS suite
cannot go green on an emulator that signs something other than the digest we send.

Background: moto 5.2.5 hashes DIGEST messages again (getmoto/moto PR #10202); the test-only fix
lives in tests/support/kms_emulator.py. Verification here uses `cryptography` against
GetPublicKey, never the emulator's own Verify (which is consistent with its Sign and would
hide the bug).
"""

import hashlib

import pytest
from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from eth_utils import keccak


def _public_key(client, key_id):
    return serialization.load_der_public_key(client.get_public_key(KeyId=key_id)["PublicKey"])


def _sign(client, key_id, message, message_type):
    return client.sign(KeyId=key_id, Message=message, MessageType=message_type,
                       SigningAlgorithm="ECDSA_SHA_256")["Signature"]


def test_digest_is_signed_as_is_not_hashed_again(kms_admin_client, make_kms_key):
    key_id = make_kms_key()
    public_key = _public_key(kms_admin_client, key_id)
    digest = keccak(b"emulator guard")
    signature = _sign(kms_admin_client, key_id, digest, "DIGEST")
    public_key.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    # What unpatched moto produces: a signature over sha256(digest).
    with pytest.raises(InvalidSignature):
        public_key.verify(signature, digest, ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("length", [1, 31, 33, 64])
def test_digest_of_wrong_length_is_rejected_like_aws(kms_admin_client, make_kms_key, length):
    with pytest.raises(ClientError) as caught:
        _sign(kms_admin_client, make_kms_key(), b"\x01" * length, "DIGEST")
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "Digest is invalid length for algorithm ECDSA_SHA_256" in str(caught.value)


def test_raw_messages_are_still_hashed(kms_admin_client, make_kms_key):
    key_id = make_kms_key()
    signature = _sign(kms_admin_client, key_id, b"a raw message", "RAW")
    _public_key(kms_admin_client, key_id).verify(
        signature, b"a raw message", ec.ECDSA(hashes.SHA256())
    )


def test_emulator_verify_agrees_on_digests(kms_admin_client, make_kms_key):
    key_id = make_kms_key()
    digest = hashlib.sha256(b"m").digest()
    signature = _sign(kms_admin_client, key_id, digest, "DIGEST")

    def verify(message, message_type):
        return kms_admin_client.verify(
            KeyId=key_id, Message=message, MessageType=message_type, Signature=signature,
            SigningAlgorithm="ECDSA_SHA_256")["SignatureValid"]

    assert verify(digest, "DIGEST")
    assert verify(b"m", "RAW")  # AWS: a RAW message verifies against its digest's signature
    assert not verify(keccak(b"other"), "DIGEST")
