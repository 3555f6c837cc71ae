"""Transactions as eth-account dicts, and the tests' own encoders for them.

Hypothesis strategies for every supported transaction type, and conversions to the proto, to
our domain object and to unsigned RLP bytes, written here field by field (with `rlp` and the
field order eth-account uses), never with signer.eth's encoder, so the reference tests
compare two independent routes.
"""

import copy
import json
import os
from typing import Any

import rlp
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_utils import keccak, to_checksum_address
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from signer.eth.transactions import AccessListEntry, Authorization, UnsignedTransaction
from signer.v1 import signer_pb2 as pb
from signer.wallet import WalletSigner
from tests.support.reference_vectors import load as load_vector

# Independent of signer.eth.*: the numbers as the EIPs state them.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
UINT64_MAX = 2**64 - 1
UINT256_MAX = 2**256 - 1
EIP2294_MAX_CHAIN_ID = UINT64_MAX // 2 - 36
EIP2681_MAX_NONCE = UINT64_MAX - 1

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- strategies: transactions as eth-account dicts -------------------------------------------

private_keys = st.integers(1, SECP256K1_N - 1).map(lambda k: "0x" + k.to_bytes(32, "big").hex())
addresses = st.binary(min_size=20, max_size=20).map(to_checksum_address)
uint256 = st.integers(0, UINT256_MAX)
uint64 = st.integers(0, UINT64_MAX)
nonces = st.integers(0, EIP2681_MAX_NONCE)
chain_ids = st.one_of(st.integers(1, EIP2294_MAX_CHAIN_ID), st.just(EIP2294_MAX_CHAIN_ID))
storage_keys = st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex())
access_lists = st.lists(
    st.fixed_dictionaries(
        {"address": addresses, "storageKeys": st.lists(storage_keys, max_size=3)}
    ),
    max_size=3,
)
# EIP-4844 versioned hashes: version byte 0x01, then any 31 bytes
versioned_hashes = st.binary(min_size=31, max_size=31).map(lambda b: b"\x01" + b)
authorizations = st.fixed_dictionaries({
    "chainId": uint64,  # the proto field is uint64
    "address": addresses,
    "nonce": nonces,
    "yParity": st.integers(0, 1),
    "r": uint256,
    "s": uint256,
})


@st.composite
def transactions(draw: st.DrawFn, tx_type: int) -> dict[str, Any]:
    """A valid eth-account transaction dict of `tx_type` (0, 1, 2, 3 or 4)."""
    tx: dict[str, Any] = {
        "chainId": draw(chain_ids),
        "nonce": draw(nonces),
        "gas": draw(uint64),
        # "" is contract creation, which types 3 and 4 forbid
        "to": draw(addresses if tx_type in (3, 4) else st.one_of(st.just(""), addresses)),
        "value": draw(uint256),
        "data": draw(st.binary(max_size=64)),
    }
    if tx_type != 0:
        tx["type"] = tx_type
    if tx_type in (0, 1):
        tx["gasPrice"] = draw(uint256)
    else:
        max_fee = draw(uint256)
        tx["maxFeePerGas"] = max_fee
        tx["maxPriorityFeePerGas"] = draw(st.integers(0, max_fee))
    if tx_type != 0:
        tx["accessList"] = draw(access_lists)
    if tx_type == 4:
        tx["authorizationList"] = draw(st.lists(authorizations, min_size=1, max_size=3))
    if tx_type == 3:
        tx["maxFeePerBlobGas"] = draw(uint256)
        tx["blobVersionedHashes"] = draw(st.lists(versioned_hashes, min_size=1, max_size=9))
    return tx


# --- the test's own encoders (independent of signer.eth and signer.client) -------------------


def hex_bytes(text: str) -> bytes:
    return bytes.fromhex(text.removeprefix("0x"))


def address_bytes(text: str) -> bytes:
    return hex_bytes(text) if text else b""


def rlp_fields(tx: dict[str, Any]) -> list[Any]:
    """The unsigned RLP field list in eth-account's order (EIP-155 form for legacy)."""
    to = address_bytes(tx["to"])
    if "type" not in tx:
        return [tx["nonce"], tx["gasPrice"], tx["gas"], to, tx["value"], tx["data"],
                tx["chainId"], 0, 0]
    access = [[hex_bytes(e["address"]), [hex_bytes(k) for k in e["storageKeys"]]]
              for e in tx["accessList"]]
    if tx["type"] == 1:
        return [tx["chainId"], tx["nonce"], tx["gasPrice"], tx["gas"], to, tx["value"],
                tx["data"], access]
    fields = [tx["chainId"], tx["nonce"], tx["maxPriorityFeePerGas"], tx["maxFeePerGas"],
              tx["gas"], to, tx["value"], tx["data"], access]
    if tx["type"] == 4:
        fields.append([[a["chainId"], hex_bytes(a["address"]), a["nonce"], a["yParity"],
                        a["r"], a["s"]] for a in tx["authorizationList"]])
    if tx["type"] == 3:
        fields += [tx["maxFeePerBlobGas"], list(tx["blobVersionedHashes"])]
    return fields


def unsigned_payload(tx: dict[str, Any]) -> bytes:
    encoded = rlp.encode(rlp_fields(tx))
    return encoded if "type" not in tx else bytes([tx["type"]]) + encoded


def to_proto(tx: dict[str, Any]) -> pb.Transaction:
    msg = pb.Transaction(
        type=tx.get("type", 0),
        chain_id=tx["chainId"],
        nonce=tx["nonce"],
        to=tx["to"],
        value=str(tx["value"]),
        gas_limit=tx["gas"],
        data=tx["data"],
    )
    if "gasPrice" in tx:
        msg.gas_price = str(tx["gasPrice"])
    if "maxFeePerGas" in tx:
        msg.max_fee_per_gas = str(tx["maxFeePerGas"])
        msg.max_priority_fee_per_gas = str(tx["maxPriorityFeePerGas"])
    for entry in tx.get("accessList", ()):
        msg.access_list.add(
            address=entry["address"], storage_keys=[hex_bytes(k) for k in entry["storageKeys"]]
        )
    for auth in tx.get("authorizationList", ()):
        msg.authorization_list.add(
            chain_id=auth["chainId"], address=auth["address"], nonce=auth["nonce"],
            y_parity=auth["yParity"], r=auth["r"].to_bytes(32, "big"),
            s=auth["s"].to_bytes(32, "big"),
        )
    if "maxFeePerBlobGas" in tx:
        msg.max_fee_per_blob_gas = str(tx["maxFeePerBlobGas"])
        msg.blob_versioned_hashes.extend(tx["blobVersionedHashes"])
    return msg


def to_model(tx: dict[str, Any]) -> UnsignedTransaction:
    """The same transaction as our domain object, built field by field."""
    return UnsignedTransaction(
        type=tx.get("type", 0),
        chain_id=tx["chainId"],
        nonce=tx["nonce"],
        to=address_bytes(tx["to"]),
        value=tx["value"],
        gas_limit=tx["gas"],
        data=tx["data"],
        gas_price=tx.get("gasPrice", 0),
        max_fee_per_gas=tx.get("maxFeePerGas", 0),
        max_priority_fee_per_gas=tx.get("maxPriorityFeePerGas", 0),
        access_list=tuple(
            AccessListEntry(
                hex_bytes(e["address"]), tuple(hex_bytes(k) for k in e["storageKeys"])
            )
            for e in tx.get("accessList", ())
        ),
        authorization_list=tuple(
            Authorization(a["chainId"], hex_bytes(a["address"]), a["nonce"], a["yParity"],
                          a["r"], a["s"])
            for a in tx.get("authorizationList", ())
        ),
        max_fee_per_blob_gas=tx.get("maxFeePerBlobGas", 0),
        blob_versioned_hashes=tuple(tx.get("blobVersionedHashes", ())),
    )


def assert_signed_like(ours: Any, reference: Any) -> None:
    """Our signed transaction equals eth-account's `SignedTransaction` byte for byte."""
    assert ours.raw_transaction == bytes(reference.raw_transaction)
    assert ours.transaction_hash == bytes(reference.hash)
    assert (ours.r, ours.s, ours.v) == (reference.r, reference.s, reference.v)


# --- one key, every kind of request, against eth-account --------------------------------------

GWEI = 10**9
_TO = "0x" + "35" * 20
# types 0 (no "type" key, as eth-account wants), 1, 2 and 4
REFERENCE_TRANSACTIONS: list[dict[str, Any]] = [
    {"chainId": 1, "nonce": 7, "gasPrice": 20 * GWEI, "gas": 21000, "to": _TO,
     "value": 10**18, "data": b""},
    {"type": 1, "chainId": 5, "nonce": 1, "gasPrice": 3 * GWEI, "gas": 50000, "to": _TO,
     "value": 1, "data": b"\x12\x34",
     "accessList": [{"address": _TO, "storageKeys": ["0x" + "00" * 31 + "01"]}]},
    {"type": 2, "chainId": 10, "nonce": 2, "maxFeePerGas": 30 * GWEI,
     "maxPriorityFeePerGas": GWEI, "gas": 90000, "to": _TO, "value": 0,
     "data": b"\xa9\x05\x9c\xbb", "accessList": []},
    {"type": 4, "chainId": 1, "nonce": 3, "maxFeePerGas": 30 * GWEI,
     "maxPriorityFeePerGas": GWEI, "gas": 100000, "to": _TO, "value": 0, "data": b"",
     "accessList": [],
     "authorizationList": [{"chainId": 1, "address": "0x" + "42" * 20, "nonce": 4, "yParity": 1,
                            "r": 2**255 - 19, "s": 12345}]},
]


def assert_signs_like_eth_account(signer: WalletSigner, private_key: str, *,
                                  deterministic: bool = True) -> None:
    """`signer` holds `private_key` (0x-hex) and signs transactions of types 0, 1, 2 and 4,
    EIP-191 messages and EIP-712 typed data as eth-account does with that key, and its repr does
    not show the key.

    deterministic: the backend picks ECDSA nonces by RFC 6979 as eth-account does, so the
    signatures are byte-identical. Otherwise (KMS, HSMs: random nonces, so no two signatures of
    the same digest agree) everything but (v, r, s) is byte-identical to eth-account's, and
    (v, r, s) is low-s and recovers, by eth-account, to the key's address.
    """
    address = Account.from_key(private_key).address
    assert signer.address == address
    signer.self_test()
    for tx in REFERENCE_TRANSACTIONS:
        reference = Account.sign_transaction(copy.deepcopy(tx), private_key)
        ours = signer.sign_transaction(to_model(tx))
        if deterministic:
            assert_signed_like(ours, reference)
            continue
        assert _unsigned_part(ours.raw_transaction) == _unsigned_part(
            bytes(reference.raw_transaction))
        assert Account.recover_transaction(ours.raw_transaction) == address
        assert ours.transaction_hash == keccak(ours.raw_transaction)
        assert ours.s <= SECP256K1_N // 2
    mail = load_vector("eip712_mail")["typed_data"]
    signed = [(encode_defunct(primitive=m), signer.sign_message(m).signature)
              for m in (b"", b"hello", os.urandom(300))]
    signed.append((encode_typed_data(full_message=mail),
                   signer.sign_typed_data(json.dumps(mail)).signature))
    for signable, ours_signature in signed:
        if deterministic:
            assert ours_signature == bytes(Account.sign_message(signable, private_key).signature)
            continue
        assert Account.recover_message(signable, signature=ours_signature) == address
        assert int.from_bytes(ours_signature[32:64], "big") <= SECP256K1_N // 2
        assert ours_signature[64] in (27, 28)
    assert private_key.removeprefix("0x") not in repr(signer.backend) + repr(signer)


def _unsigned_part(raw: bytes) -> tuple[bytes, list[Any]]:
    """A signed transaction's type byte (b"" for legacy) and its fields without (v, r, s)."""
    prefix, body = (raw[:1], raw[1:]) if raw[0] < 0x80 else (b"", raw)
    fields = rlp.decode(body)
    return prefix, fields[:-3]
