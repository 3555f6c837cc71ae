"""eth-account is the reference: our core must produce its bytes exactly.

Random transactions of every supported type are signed by the env signer through both request
routes (structured proto and `unsigned_transaction` bytes) and compared with
`Account.sign_transaction`. The unsigned bytes are built with `rlp` from the field order
eth-account uses (tests/support/eth_transactions.py, never with our encoder), and checked
against eth-account's own signing hash.
The codec and the signature normalization are tested on their own below.
"""

import copy
import functools
import json
import re
from typing import Any

import pytest
import rlp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.typed_transactions import TypedTransaction
from eth_keys import keys
from eth_utils import keccak
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from signer.errors import InvalidRequest
from signer.eth import signature
from signer.eth.signature import BadBackendSignature
from signer.eth.transactions import (
    UnsignedAuthorization,
    authorization_digest,
    decode_unsigned,
    encode_unsigned,
    signing_hash,
)
from signer.grpc.convert import (
    authorization_from_request,
    authorization_response,
    sign_transaction_response,
    transaction_from_request,
)
from signer.v1 import signer_pb2 as pb
from signer.wallet import WalletSigner
from tests.conftest import env_wallet
from tests.support.eth_transactions import (
    FAST,
    SECP256K1_N,
    UINT64_MAX,
    addresses,
    assert_signed_like,
    hex_bytes,
    nonces,
    private_keys,
    rlp_fields,
    to_model,
    to_proto,
    transactions,
    uint64,
    uint256,
    unsigned_payload,
)
from tests.support.reference_vectors import TYPED_EXAMPLES
from tests.support.reference_vectors import load as load_vector

# --- transactions: our signer vs eth-account ------------------------------------------------


@pytest.mark.parametrize("tx_type", [0, 1, 2, 3, 4])
@settings(FAST, max_examples=80)
@given(data=st.data(), key=private_keys)
def test_transaction_signature_equals_eth_account(tx_type: int, data: st.DataObject, key: str):
    tx = data.draw(transactions(tx_type))
    reference = Account.sign_transaction(copy.deepcopy(tx), key)
    signer = env_wallet(key)
    payload = unsigned_payload(tx)
    if tx_type != 0:
        # our hand-built unsigned bytes hash to what eth-account itself signs
        assert keccak(payload) == bytes(TypedTransaction.from_dict(copy.deepcopy(tx)).hash())

    structured = transaction_from_request(pb.SignTransactionRequest(transaction=to_proto(tx)))
    unsigned = transaction_from_request(pb.SignTransactionRequest(unsigned_transaction=payload))
    assert structured == unsigned == to_model(tx)

    by_structure = signer.sign_transaction(structured)
    by_bytes = signer.sign_transaction(unsigned)
    assert by_structure == by_bytes
    assert_signed_like(by_structure, reference)
    assert Account.recover_transaction(by_structure.raw_transaction) == signer.address

    # and the gRPC response carries the same, `v` included (uint64 even at the largest chain id)
    response = sign_transaction_response(signer, by_structure)
    assert response.raw_transaction == bytes(reference.raw_transaction)
    assert response.transaction_hash == bytes(reference.hash)
    assert response.sender == signer.address
    assert (response.signature.v, response.signature.r, response.signature.s) == (
        reference.v, reference.r.to_bytes(32, "big"), reference.s.to_bytes(32, "big"))


# --- EIP-7702 authorizations: our signer vs eth-account -------------------------------------


@settings(FAST, max_examples=100)
@given(key=private_keys, chain_id=uint256, delegate=addresses, nonce=nonces)
def test_authorization_signature_equals_eth_account(
    key: str, chain_id: int, delegate: str, nonce: int
):
    reference = Account.sign_authorization(
        {"chainId": chain_id, "address": delegate, "nonce": nonce}, key
    )
    # the digest as EIP-7702 states it, built here: keccak256(0x05 || rlp([chain, addr, nonce]))
    digest = keccak(b"\x05" + rlp.encode([chain_id, hex_bytes(delegate), nonce]))
    assert digest == bytes(reference.authorization_hash)
    unsigned = UnsignedAuthorization(chain_id, hex_bytes(delegate), nonce)
    assert authorization_digest(unsigned) == digest

    signer = env_wallet(key)
    signed = signer.sign_authorization(unsigned)
    assert (signed.chain_id, signed.address, signed.nonce) == (chain_id, reference.address, nonce)
    assert (signed.y_parity, signed.r, signed.s) == (reference.y_parity, reference.r, reference.s)
    assert reference.authority == signer.address_bytes


@settings(FAST, max_examples=50)
@given(key=private_keys, chain_id=uint64, delegate=addresses, nonce=nonces)
def test_authorization_over_the_proto_equals_eth_account(
    key: str, chain_id: int, delegate: str, nonce: int
):
    """The gRPC route: request -> domain -> signed -> response, as eth-account signs it."""
    request = pb.SignAuthorizationRequest(
        key_id="k", chain_id=chain_id, address=delegate.lower(), nonce=nonce
    )
    signed = env_wallet(key).sign_authorization(authorization_from_request(request))
    reply = authorization_response(signed).authorization
    reference = Account.sign_authorization(
        {"chainId": chain_id, "address": delegate, "nonce": nonce}, key
    )
    assert (reply.chain_id, reply.address, reply.nonce, reply.y_parity) == (
        chain_id, delegate, nonce, reference.y_parity)
    assert (reply.r, reply.s) == (reference.r.to_bytes(32, "big"), reference.s.to_bytes(32, "big"))


def test_authorization_bounds_name_the_field():
    with pytest.raises(InvalidRequest, match="nonce: 18446744073709551615 exceeds"):
        UnsignedAuthorization(1, b"\x11" * 20, UINT64_MAX)
    with pytest.raises(InvalidRequest, match="address: must be 20 bytes"):
        UnsignedAuthorization(1, b"\x11" * 19, 0)
    with pytest.raises(InvalidRequest, match=r"chain_id: .* does not fit in 256 bits"):
        UnsignedAuthorization(2**256, b"\x11" * 20, 0)
    with pytest.raises(InvalidRequest, match="address: EIP-55 checksum mismatch"):
        authorization_from_request(pb.SignAuthorizationRequest(
            chain_id=1, address="0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD", nonce=0))


def test_eip155_example_from_the_eip():
    vector = load_vector("eip155_example")
    tx = dict(vector["transaction"], data=hex_bytes(vector["transaction"]["data"]))
    signer = env_wallet(vector["private_key"])
    model = transaction_from_request(pb.SignTransactionRequest(transaction=to_proto(tx)))

    assert encode_unsigned(model) == hex_bytes(vector["signing_data"])
    assert signing_hash(model) == hex_bytes(vector["signing_hash"])
    for route in (model, decode_unsigned(hex_bytes(vector["signing_data"]))):
        signed = signer.sign_transaction(route)
        assert signed.raw_transaction == hex_bytes(vector["signed_transaction"])
        assert (signed.v, signed.r, signed.s) == (vector["v"], int(vector["r"]), int(vector["s"]))
        assert signed.transaction_hash == keccak(hex_bytes(vector["signed_transaction"]))


# --- messages and typed data ----------------------------------------------------------------


@settings(FAST, max_examples=100)
@given(key=private_keys, message=st.binary(max_size=300))
def test_personal_message_equals_eth_account(key: str, message: bytes):
    reference = Account.sign_message(encode_defunct(primitive=message), key)
    signed = env_wallet(key).sign_message(message)
    assert signed.signature == bytes(reference.signature)
    assert signed.digest == bytes(reference.message_hash)


def test_eip712_mail_example_from_the_eip():
    vector = load_vector("eip712_mail")
    signer = env_wallet(vector["private_key"])
    assert signer.address == vector["address"]
    signed = signer.sign_typed_data(json.dumps(vector["typed_data"]))
    assert signed.digest == hex_bytes(vector["digest"])
    expected = hex_bytes(vector["r"]) + hex_bytes(vector["s"]) + bytes([vector["v"]])
    assert signed.signature == expected


def _cases_with_mail() -> dict[str, Any]:
    mail = load_vector("eip712_mail")["typed_data"]
    return {"mail": mail, **TYPED_EXAMPLES}


@pytest.mark.parametrize("name", ["mail", *TYPED_EXAMPLES])
def test_typed_data_examples_equal_eth_account(name: str, env_key: str, env_signer: WalletSigner):
    typed = _cases_with_mail()[name]
    reference = Account.sign_typed_data(env_key, full_message=copy.deepcopy(typed))
    signed = env_signer.sign_typed_data(json.dumps(typed))
    assert signed.signature == bytes(reference.signature)
    assert signed.digest == bytes(reference.message_hash)


ATOMIC_TYPES = (
    ["bool", "address", "string", "bytes"]
    + [f"uint{8 * i}" for i in range(1, 33)]
    + [f"int{8 * i}" for i in range(1, 33)]
    + [f"bytes{i}" for i in range(1, 33)]
)
identifiers = st.from_regex(r"[a-z][a-zA-Z0-9_]{0,7}", fullmatch=True)
array_suffixes = st.sampled_from(["", "", "", "[]", "[2]", "[][1]", "[1][]"])


def _atomic_value(draw: st.DrawFn, kind: str) -> Any:
    if kind == "bool":
        return draw(st.booleans())
    if kind == "address":
        return draw(addresses)
    if kind == "string":
        return draw(st.text(max_size=12))
    if kind == "bytes":
        return "0x" + draw(st.binary(max_size=40)).hex()
    if kind.startswith("bytes"):
        size = int(kind[5:])
        return "0x" + draw(st.binary(min_size=size, max_size=size)).hex()
    bits = int(kind.lstrip("uint"))
    if kind.startswith("u"):
        return draw(st.integers(0, 2**bits - 1))
    return draw(st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))


def _value(draw: st.DrawFn, kind: str, types: dict[str, Any]) -> Any:
    if kind.endswith("]"):
        inner, dim = kind[:-1].rsplit("[", 1)
        length = int(dim) if dim else draw(st.integers(0, 2))
        return [_value(draw, inner, types) for _ in range(length)]
    if kind in types:
        return {f["name"]: _value(draw, f["type"], types) for f in types[kind]}
    return _atomic_value(draw, kind)


@st.composite
def typed_data(draw: st.DrawFn) -> dict[str, Any]:
    """Random EIP-712 data: an acyclic chain of struct types S0 -> S1 -> ..., random fields."""
    names = [f"S{i}" for i in range(draw(st.integers(1, 3)))]
    types: dict[str, Any] = {}
    for i, name in enumerate(names):
        field_names = draw(st.lists(identifiers, min_size=1, max_size=4, unique=True))
        kinds = [draw(st.sampled_from(ATOMIC_TYPES + names[i + 1:])) + draw(array_suffixes)
                 for _ in field_names]
        if i + 1 < len(names):  # every struct type is reachable from the primary type
            kinds[0] = names[i + 1] + draw(array_suffixes)
        types[name] = [{"name": n, "type": k} for n, k in zip(field_names, kinds, strict=True)]
    domain_values = {
        "name": st.text(max_size=10), "version": st.text(max_size=4), "chainId": uint256,
        "verifyingContract": addresses,
        "salt": st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex()),
    }
    domain_types = {"name": "string", "version": "string", "chainId": "uint256",
                    "verifyingContract": "address", "salt": "bytes32"}
    present = draw(st.lists(st.sampled_from(list(domain_values)), min_size=1, unique=True))
    present = [k for k in domain_values if k in present]
    types["EIP712Domain"] = [{"name": k, "type": domain_types[k]} for k in present]
    return {
        "types": types,
        "primaryType": "S0",
        "domain": {k: draw(domain_values[k]) for k in present},
        "message": _value(draw, "S0", types),
    }


@settings(FAST, max_examples=100)
@given(key=private_keys, typed=typed_data())
def test_random_typed_data_equals_eth_account(key: str, typed: dict[str, Any]):
    reference = Account.sign_typed_data(key, full_message=copy.deepcopy(typed))
    signed = env_wallet(key).sign_typed_data(json.dumps(typed))
    assert signed.signature == bytes(reference.signature)
    assert signed.digest == bytes(reference.message_hash)


# --- the codec on its own --------------------------------------------------------------------

any_transaction = st.sampled_from([0, 1, 2, 4]).flatmap(transactions)


@settings(FAST, max_examples=150)
@given(tx=any_transaction)
def test_codec_round_trips_and_matches_the_reference_layout(tx: dict[str, Any]):
    model = to_model(tx)
    assert encode_unsigned(model) == unsigned_payload(tx)
    assert decode_unsigned(encode_unsigned(model)) == model


def _rlp_list(encoded_items: list[bytes], long_form: bool = False) -> bytes:
    """An RLP list around already-encoded items (so a test can plant a non-canonical one)."""
    body = b"".join(encoded_items)
    if len(body) < 56 and not long_form:
        return bytes([0xC0 + len(body)]) + body
    size = len(body).to_bytes(max(1, (len(body).bit_length() + 7) // 8), "big")
    return bytes([0xF7 + len(size)]) + size + body


EIP1559 = {"type": 2, "chainId": 1, "nonce": 5, "maxPriorityFeePerGas": 1, "maxFeePerGas": 9,
           "gas": 21000, "to": "0x" + "35" * 20, "value": 7, "data": b"\x05", "accessList": []}
LEGACY = {"chainId": 1, "nonce": 5, "gasPrice": 9, "gas": 21000, "to": "0x" + "35" * 20,
          "value": 7, "data": b"\x05"}


def _typed_payload(items: list[bytes], tx_type: int = 2) -> bytes:
    return bytes([tx_type]) + _rlp_list(items)


def _items(tx: dict[str, Any]) -> list[bytes]:
    return [rlp.encode(item) for item in rlp_fields(tx)]


def _replace(items: list[bytes], index: int, encoded: bytes) -> list[bytes]:
    return [*items[:index], encoded, *items[index + 1:]]


def _patched(index: int, encoded: bytes) -> bytes:
    """The EIP-1559 fixture with field `index` replaced by `encoded`."""
    return _typed_payload(_replace(_items(EIP1559), index, encoded))


def test_canonical_fixtures_decode():
    # the malformed payloads below are these, with one defect each
    assert decode_unsigned(_typed_payload(_items(EIP1559))) == to_model(EIP1559)
    assert decode_unsigned(_rlp_list(_items(LEGACY))) == to_model(LEGACY)


MALFORMED = {
    "leading zero integer": (
        _patched(1, b"\x82\x00\x05"), "nonce: non-canonical"),
    "zero as 0x00": (
        _patched(2, b"\x00"), "max_priority_fee_per_gas: non-canonical"),
    "single byte wrapped as 0x81xx": (
        _patched(7, b"\x81\x05"), "malformed RLP"),
    "short string in long form": (
        _patched(7, b"\xb8\x02\x05\x06"), "malformed RLP"),
    "short list in long form": (
        b"\x02" + _rlp_list(_items(EIP1559), long_form=True), "malformed RLP"),
    "legacy short list in long form": (_rlp_list(_items(LEGACY), long_form=True), "malformed RLP"),
    "trailing bytes": (_typed_payload(_items(EIP1559)) + b"\x00", "malformed RLP"),
    "legacy trailing bytes": (_rlp_list(_items(LEGACY)) + b"\x80", "malformed RLP"),
    "missing field": (_typed_payload(_items(EIP1559)[:-1]), "has 9 fields, got 8"),
    "extra field": (_typed_payload([*_items(EIP1559), b"\x80"]), "has 9 fields, got 10"),
    "legacy extra field": (_rlp_list([*_items(LEGACY), b"\x80"]), "has 9 fields, got 10"),
    "pre-EIP-155 legacy (6 fields)": (_rlp_list(_items(LEGACY)[:6]), "pre-EIP-155"),
    "EIP-155 tail not 0, 0": (
        _rlp_list(_replace(_items(LEGACY), 8, b"\x01")), "must end with 0, 0"),
    "type 3 (blob) without its blob fields": (
        _typed_payload(_items(EIP1559), tx_type=3), "type 3 has 11 fields, got 9"),
    "unknown type 0x05": (
        _typed_payload(_items(EIP1559), tx_type=5), "unknown transaction type 5"),
    "unknown type 0x7f": (
        _typed_payload(_items(EIP1559), tx_type=0x7F), "unknown transaction type 127"),
    "an RLP string": (rlp.encode(b"not a transaction"), "not a transaction"),
    "typed payload not a list": (b"\x02" + rlp.encode(b"abc"), "expected an RLP list"),
    "empty": (b"", "empty"),
    "type byte only": (b"\x02", "malformed RLP"),
    "list where an integer goes": (
        _patched(1, rlp.encode([1])), "nonce: expected a byte string"),
    "to of 19 bytes": (
        _patched(5, rlp.encode(b"\x35" * 19)), "to: must be 20 bytes"),
    "nonce over 64 bits": (
        _patched(1, rlp.encode(2**64)), "nonce: does not fit"),
    "value over 256 bits": (
        _patched(6, rlp.encode(b"\x01" * 33)), "value: does not fit"),
    "chain id 0": (_patched(0, b"\x80"), "chain_id: required"),
    "storage key of 31 bytes": (
        _patched(8, rlp.encode([[b"\x11" * 20, [b"\x22" * 31]]])),
        "access_list[0].storage_keys[0]: must be exactly 32 bytes"),
    "type 2 layout under type byte 1": (
        _typed_payload(_items(EIP1559), tx_type=1), "type 1 has 8 fields, got 9"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_unsigned_payload_is_refused_with_a_precise_message(case: str):
    payload, expected = MALFORMED[case]
    with pytest.raises(InvalidRequest, match=re.escape(expected)):
        decode_unsigned(payload)


@pytest.mark.parametrize("tx_type", [0, 1, 2, 4])
def test_already_signed_payload_is_refused(tx_type: int):
    tx = {k: v for k, v in EIP1559.items() if k not in ("type", "maxFeePerGas",
                                                         "maxPriorityFeePerGas")}
    tx = {0: LEGACY, 1: {**tx, "type": 1, "gasPrice": 9}, 2: EIP1559,
          4: {**EIP1559, "type": 4, "authorizationList": [
              {"chainId": 1, "address": "0x" + "44" * 20, "nonce": 0, "yParity": 1,
               "r": 1, "s": 2}]}}[tx_type]
    raw = bytes(Account.sign_transaction(copy.deepcopy(tx), "0x" + "46" * 32).raw_transaction)
    expected = "must end with 0, 0" if tx_type == 0 else r"was it already signed\?"
    with pytest.raises(InvalidRequest, match=expected):
        decode_unsigned(raw)


def test_type_byte_zero_is_refused():
    # was a KeyError: 0 passed check_type (it is LEGACY) but has no typed field table
    for body in (_items(EIP1559), _items(LEGACY), []):
        with pytest.raises(InvalidRequest, match=r"unsigned_transaction: .*type byte"):
            decode_unsigned(b"\x00" + _rlp_list(body))


@functools.cache
def _nested_lists(depth: int) -> bytes:
    encoded = b"\xc0"
    for _ in range(depth):
        encoded = _rlp_list([encoded])
    return encoded


@pytest.mark.parametrize("depth", [5, 1000, 20_000])
@pytest.mark.parametrize("prefix", [b"", b"\x01", b"\x02", b"\x04"])
def test_deeply_nested_payload_is_refused(prefix: bytes, depth: int):
    # was RecursionError (or, with eth-account's raised recursion limit, a C stack overflow)
    with pytest.raises(InvalidRequest, match=r"unsigned_transaction.*nested"):
        decode_unsigned(prefix + _nested_lists(depth))


def test_storage_key_nested_one_level_too_deep_is_refused():
    too_deep = rlp.encode([[b"\x11" * 20, [[b"\x22" * 32]]]])
    with pytest.raises(InvalidRequest, match="unsigned_transaction"):
        decode_unsigned(_patched(8, too_deep))


rlp_items = st.recursive(
    st.one_of(st.binary(max_size=40), uint256.map(lambda n: rlp.encode(n)[1:] or b"")),
    lambda children: st.lists(children, max_size=11),
    max_leaves=30,
)
structured_payloads = st.tuples(
    st.sampled_from([b"", b"\x01", b"\x02", b"\x03", b"\x04", b"\x05", b"\x7f"]), rlp_items
).map(lambda pair: pair[0] + rlp.encode(pair[1]))


@st.composite
def mutated_payloads(draw: st.DrawFn) -> bytes:
    """A valid unsigned payload with a few bytes overwritten."""
    payload = unsigned_payload(draw(any_transaction))
    at = draw(st.integers(0, len(payload)))
    patch = draw(st.binary(min_size=1, max_size=3))
    return payload[:at] + patch + payload[at + len(patch):]



@settings(FAST, max_examples=400)
@given(payload=st.one_of(st.binary(max_size=200), structured_payloads, mutated_payloads()))
def test_decoder_never_raises_anything_but_invalid_request(payload: bytes):
    try:
        tx = decode_unsigned(payload)
    except InvalidRequest:
        return
    assert encode_unsigned(tx) == payload  # whatever is accepted is canonical


# --- signature normalization ----------------------------------------------------------------

digests = st.binary(min_size=32, max_size=32)


def _sec1(private: keys.PrivateKey) -> bytes:
    """The 65-byte uncompressed public key, as backends report it."""
    return b"\x04" + private.public_key.to_bytes()


@settings(FAST, max_examples=100)
@given(key=private_keys, digest=digests)
def test_high_s_is_flipped_to_low_s_and_still_recovers(key: str, digest: bytes):
    private = keys.PrivateKey(hex_bytes(key))
    public = _sec1(private)
    low = private.sign_msg_hash(digest)
    assert low.s <= SECP256K1_N // 2
    high_s = SECP256K1_N - low.s
    for sig in (signature.decode(encode_dss_signature(low.r, high_s), "der"),
                signature.decode(low.r.to_bytes(32, "big") + high_s.to_bytes(32, "big"), "raw")):
        normalized = signature.normalize(digest, *sig, public)
        assert (normalized.r, normalized.s, normalized.recovery_id) == (low.r, low.s, low.v)
        recovered = keys.Signature(vrs=(normalized.recovery_id, normalized.r, normalized.s))
        assert recovered.recover_public_key_from_msg_hash(digest) == private.public_key


@settings(FAST, max_examples=60)
@given(secret=st.integers(1, SECP256K1_N - 1), digest=digests)
def test_der_from_another_ecdsa_implementation_normalizes(secret: int, digest: bytes):
    # `cryptography` (OpenSSL) signs with random k and either half of s, like an HSM or KMS
    key = ec.derive_private_key(secret, ec.SECP256K1())
    der = key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    private = keys.PrivateKey(secret.to_bytes(32, "big"))
    normalized = signature.normalize(digest, *signature.decode(der, "der"), _sec1(private))
    assert normalized.s <= SECP256K1_N // 2
    rsv = keys.Signature(vrs=(normalized.recovery_id, normalized.r, normalized.s))
    assert rsv.recover_public_key_from_msg_hash(digest) == private.public_key


BAD_DER = {
    "empty": b"",
    "garbage": b"\x01\x02\x03",
    "truncated": encode_dss_signature(5, 7)[:-1],
    "trailing byte": encode_dss_signature(5, 7) + b"\x00",
    "raw r||s given as DER": b"\x11" * 64,
}


@pytest.mark.parametrize("case", list(BAD_DER))
def test_malformed_der_is_refused(case: str):
    with pytest.raises(BadBackendSignature, match="malformed DER"):
        signature.decode(BAD_DER[case], "der")


@pytest.mark.parametrize("size", [0, 63, 65, 72])
def test_raw_signature_of_wrong_length_is_refused(size: int):
    with pytest.raises(BadBackendSignature, match="expected r\\|\\|s"):
        signature.decode(b"\x01" * size, "raw")


@pytest.mark.parametrize(("r", "s"), [(0, 1), (1, 0), (SECP256K1_N, 1), (1, SECP256K1_N),
                                      (2**256 - 1, 1), (1, 2**256 - 1)])
def test_r_or_s_out_of_range_is_refused(r: int, s: int):
    public = _sec1(keys.PrivateKey(b"\x46" * 32))
    with pytest.raises(BadBackendSignature, match="out of range"):
        signature.normalize(b"\x00" * 32, r, s, public)


@settings(FAST, max_examples=40)
@given(digest=digests, mine=private_keys, other=private_keys)
def test_signature_by_another_key_is_refused(digest: bytes, mine: str, other: str):
    assume(mine != other)
    sig = keys.PrivateKey(hex_bytes(other)).sign_msg_hash(digest)
    with pytest.raises(BadBackendSignature, match="does not recover"):
        signature.normalize(digest, sig.r, sig.s, _sec1(keys.PrivateKey(hex_bytes(mine))))


class _LyingBackend:
    """A real key that claims another key's public key: a misconfigured HSM slot, say."""

    name = "env"
    signature_format = "der"

    def __init__(self, claimed: keys.PrivateKey, actual: keys.PrivateKey) -> None:
        self.public_key = _sec1(claimed)
        self._actual = actual

    def sign_digest(self, digest: bytes, timeout: float | None) -> bytes:
        sig = self._actual.sign_msg_hash(digest)
        return encode_dss_signature(sig.r, sig.s)

    def close(self) -> None:
        pass


def test_wallet_never_releases_a_signature_by_another_key():
    claimed, actual = keys.PrivateKey(b"\x46" * 32), keys.PrivateKey(b"\x47" * 32)
    wallet = WalletSigner("k", _LyingBackend(claimed, actual))  # type: ignore[arg-type]
    tx = transaction_from_request(pb.SignTransactionRequest(
        unsigned_transaction=unsigned_payload(EIP1559)))
    for sign in (lambda: wallet.sign_message(b"hi"), lambda: wallet.sign_transaction(tx),
                 wallet.self_test,
                 lambda: wallet.sign_typed_data(json.dumps(_cases_with_mail()["mail"]))):
        with pytest.raises(BadBackendSignature):
            sign()
    honest = WalletSigner("k", _LyingBackend(actual, actual))  # type: ignore[arg-type]
    assert Account.recover_message(encode_defunct(b"hi"),
                                   signature=honest.sign_message(b"hi").signature) == honest.address


@given(st.binary(max_size=4096))
@settings(max_examples=300, deadline=None)
def test_our_keccak_backend_matches_eth_utils(data: bytes) -> None:
    """signer.eth.hashing uses eth-hash's pysha3 backend; eth_utils' default (pycryptodome)
    is the reference, and the known empty-input digest pins both."""
    from signer.eth.hashing import keccak as ours

    assert ours(data) == keccak(data)


def test_our_keccak_known_vector() -> None:
    from signer.eth.hashing import keccak as ours

    assert ours(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
