"""PKCS#11 backend specifics on a real SoftHSM token: keys, curve, public key, normalization."""

import logging

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_keys import keys

from signer.backends.pkcs11 import Pkcs11Backend, ec_point_to_sec1
from signer.errors import (
    BackendUnavailable,
    DeadlineExceeded,
    FailedPrecondition,
    PermissionDenied,
)
from signer.eth.signature import HALF_N
from signer.service import KeyRing
from signer.v1 import signer_pb2 as pb
from tests.support.fixtures_pkcs11 import generate_key, open_signer

TYPED_DATA = """{"types": {"EIP712Domain": [{"name": "name", "type": "string"},
  {"name": "chainId", "type": "uint256"}], "Mail": [{"name": "contents", "type": "string"}]},
  "primaryType": "Mail", "domain": {"name": "wallet-signer", "chainId": 1},
  "message": {"contents": "hello"}}"""


def test_ec_point_raw_and_der_wrapped():
    point = b"\x04" + bytes(range(64))
    assert ec_point_to_sec1(point) == point
    assert ec_point_to_sec1(b"\x04\x41" + point) == point
    with pytest.raises(FailedPrecondition):
        ec_point_to_sec1(b"\x04\x21\x02" + bytes(32))  # compressed


def test_public_key_matches_token(softhsm_token):
    public_key = generate_key(softhsm_token, "k1")
    signer = open_signer(softhsm_token, "k1")
    try:
        assert signer.public_key == public_key
        assert signer.backend.name == "pkcs11"
    finally:
        signer.backend.close()


def test_thousand_signatures_low_s_and_recovering(pkcs11_signer):
    """SoftHSM returns high s about half the time: this fails without the core's normalization."""
    expected = keys.PublicKey(pkcs11_signer.public_key[1:])
    for i in range(1000):
        signed = pkcs11_signer.sign_message(i.to_bytes(4, "big"))
        r, s, v = (int.from_bytes(signed.signature[:32], "big"),
                   int.from_bytes(signed.signature[32:64], "big"), signed.signature[64])
        assert s <= HALF_N
        recovered = keys.Signature(vrs=(v - 27, r, s)).recover_public_key_from_msg_hash(
            signed.digest)
        assert recovered == expected


def test_raw_backend_gives_high_s_sometimes(pkcs11_signer):
    """Shows the normalization above is needed: the token itself does not produce low s."""
    sigs = [pkcs11_signer.backend.sign_digest(bytes([i]) * 32, None) for i in range(64)]
    assert any(int.from_bytes(s[32:], "big") > HALF_N for s in sigs)


def test_sign_message_and_typed_data_recover_to_address(serve, pkcs11_signer):
    server = serve(KeyRing([pkcs11_signer]))
    address = server.stub.GetAddress(pb.GetAddressRequest(key_id="hsm")).address
    reply = server.stub.SignMessage(pb.SignMessageRequest(key_id="hsm", message=b"hi"))
    assert Account.recover_message(encode_defunct(b"hi"), signature=reply.signature) == address
    reply = server.stub.SignTypedData(pb.SignTypedDataRequest(key_id="hsm",
                                                              typed_data_json=TYPED_DATA))
    import json
    message = encode_typed_data(full_message=json.loads(TYPED_DATA))
    assert Account.recover_message(message, signature=reply.signature) == address


def test_refuses_non_digest(pkcs11_signer):
    with pytest.raises(ValueError):
        pkcs11_signer.backend.sign_digest(b"\x01" * 33, None)


def test_wrong_curve_refused_at_startup(softhsm_token):
    from pkcs11 import Attribute, KeyType, Mechanism
    from pkcs11.util.ec import encode_named_curve_parameters

    from signer.backends import pkcs11 as backend

    with backend.open_session(softhsm_token.key_config("x").module, softhsm_token.label,
                              softhsm_token.pin, rw=True) as session:
        session.generate_keypair(
            KeyType.EC, 0, mechanism=Mechanism.EC_KEY_PAIR_GEN, store=True, label="p256",
            public_template={Attribute.EC_PARAMS: encode_named_curve_parameters("1.2.840.10045.3.1.7")})
    with pytest.raises(FailedPrecondition, match="not on secp256k1"):
        open_signer(softhsm_token, "p256")


def test_startup_errors_name_the_key_keep_their_kind_and_hide_the_pin(softhsm_token, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(FailedPrecondition, match=r"keys.hsm: no private key"):
        open_signer(softhsm_token, "absent")
    softhsm_token.pin_file.write_text("0000000000000000")
    with pytest.raises(PermissionDenied, match=r"keys.hsm: .*PIN incorrect") as info:
        open_signer(softhsm_token, "absent")
    assert "0000000000000000" not in str(info.value) + caplog.text
    with pytest.raises(BackendUnavailable, match=r"keys.k: no token"):
        Pkcs11Backend.open("k", softhsm_token.key_config("k").model_copy(
            update={"token_label": "other"}))


def test_pool_slot_wait_honours_deadline(softhsm_token):
    generate_key(softhsm_token, "k")
    signer = open_signer(softhsm_token, "k", pool_size=1)
    try:
        backend = signer.backend
        held = backend._acquire(None)  # take the only session
        with pytest.raises(DeadlineExceeded):
            backend.sign_digest(b"\x01" * 32, 0.05)
        backend._pool.put(held)
        assert len(backend.sign_digest(b"\x01" * 32, 1.0)) == 64
    finally:
        signer.backend.close()


def test_two_keys_share_one_login(softhsm_token):
    from signer.backends import pkcs11 as backend

    generate_key(softhsm_token, "a")
    generate_key(softhsm_token, "b")
    a, b = open_signer(softhsm_token, "a", "a"), open_signer(softhsm_token, "b", "b")
    try:
        assert a.backend._connection is b.backend._connection
        assert len(backend._connections) == 1
        a.self_test()
        b.self_test()
    finally:
        a.backend.close()
        b.backend.close()
    assert backend._connections == {} and backend._libraries == {}
