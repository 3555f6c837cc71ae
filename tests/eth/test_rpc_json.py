"""EIP-1474 transaction JSON to the one UnsignedTransaction: the same transaction as the gRPC
route for every type (property test against the test's own field-by-field model), and every
malformed value refused with the field's JSON name."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signer.errors import InvalidRequest
from signer.eth import rpc_json
from signer.grpc.convert import transaction_from_proto
from tests.support.eth_transactions import FAST, to_model, to_proto, transactions


def to_rpc_json(tx: dict[str, Any]) -> dict[str, Any]:
    """An eth-account dict as a JSON-RPC client writes it (no type for legacy: inferred)."""
    out: dict[str, Any] = {"chainId": hex(tx["chainId"]), "nonce": hex(tx["nonce"]),
                           "gas": hex(tx["gas"]), "value": hex(tx["value"]),
                           "input": "0x" + tx["data"].hex()}
    if tx["to"]:
        out["to"] = tx["to"]
    if "type" in tx:
        out["type"] = hex(tx["type"])
    for name in ("gasPrice", "maxFeePerGas", "maxPriorityFeePerGas", "maxFeePerBlobGas"):
        if name in tx:
            out[name] = hex(tx[name])
    if "accessList" in tx:
        out["accessList"] = tx["accessList"]
    if "authorizationList" in tx:
        out["authorizationList"] = [
            {"chainId": hex(a["chainId"]), "address": a["address"], "nonce": hex(a["nonce"]),
             "yParity": hex(a["yParity"]), "r": hex(a["r"]), "s": hex(a["s"])}
            for a in tx["authorizationList"]
        ]
    if "blobVersionedHashes" in tx:
        out["blobVersionedHashes"] = ["0x" + h.hex() for h in tx["blobVersionedHashes"]]
    return out


@FAST
@given(st.sampled_from([0, 1, 2, 3, 4]).flatmap(transactions))
def test_json_route_builds_the_same_transaction_as_the_grpc_route(tx: dict[str, Any]):
    parsed = rpc_json.unsigned_transaction(rpc_json.transaction_request(to_rpc_json(tx)))
    assert parsed == to_model(tx) == transaction_from_proto(to_proto(tx))


@FAST
@given(st.integers(0, 2**256 - 1))
def test_quantities_round_trip_and_reject_leading_zeros(n: int):
    assert rpc_json.quantity(hex(n), "value") == n
    with pytest.raises(InvalidRequest, match="value: leading zeros"):
        rpc_json.quantity("0x0" + hex(n)[2:], "value")


def test_type_is_inferred_from_the_fields_present():
    base = {"to": "0x" + "11" * 20}
    infer = lambda **f: rpc_json.transaction_request({**base, **f}).implied_type()  # noqa: E731
    assert infer() is None  # eth_sendTransaction decides from the node's fee market
    assert infer(gasPrice="0x1") == 0
    assert infer(accessList=[]) == 1
    assert infer(maxFeePerGas="0x1") == 2
    assert infer(maxPriorityFeePerGas="0x1", accessList=[]) == 2
    assert infer(authorizationList=[]) == 4
    assert infer(blobVersionedHashes=[]) == 3
    assert infer(maxFeePerBlobGas="0x1", maxFeePerGas="0x1") == 3
    assert infer(type="0x1", gasPrice="0x1") == 1


BAD = [
    ({"value": "0xZZ"}, "value: expected \"0x\" followed by hex digits"),
    ({"value": "0x"}, "value: expected"),
    ({"value": "12"}, "value: expected"),
    ({"value": 12}, "value: expected a hex quantity string"),
    ({"value": "0x01"}, "value: leading zeros are not allowed"),
    ({"value": "0x1" + "0" * 64}, "value: does not fit in 256 bits"),
    ({"value": "0x1" + "0" * 500}, "value: does not fit in 256 bits"),
    ({"nonce": "0x1" + "0" * 16}, "nonce: 0x1" + "0" * 16 + " does not fit in 64 bits"),
    ({"gas": "0x1", "gasLimit": "0x2"}, "gas: differs from gasLimit"),
    ({"input": "0x12", "data": "0x13"}, "input: differs from data"),
    ({"data": "0x123"}, "data: expected \"0x\" followed by an even number of hex digits"),
    ({"to": "0x1234"}, "to: expected a 0x-prefixed 20-byte hex address"),
    ({"to": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"}, "to: EIP-55 checksum mismatch"),
    ({"from": None, "foo": "0x1"}, "foo: not a transaction field"),
    ({"maxFeePerBlobGas": "0x1", "gasPrice": "0x1"},
     "gasPrice: not a field of type 3 transactions (type inferred"),
    ({"type": "0x2", "blobVersionedHashes": []}, "blobVersionedHashes: not a field of type 2"),
    ({"blobVersionedHashes": "0x01"}, "blobVersionedHashes: expected a list, got '0x01'"),
    ({"blobVersionedHashes": ["0x1"]}, "blobVersionedHashes[0]: expected \"0x\" followed by"),
    ({"blobs": [12]}, "blobs[0]: expected a 0x-prefixed hex string, got a JSON number"),
    ({"sidecars": []}, "sidecars: not accepted; send the blobs as `blobs`"),
    ({"type": "0x6"}, "type: unknown transaction type 6"),
    ({"type": "0x5"}, "type: unknown transaction type 5"),
    ({"type": "0x0", "maxFeePerGas": "0x1"}, "maxFeePerGas: not a field of type 0"),
    ({"gasPrice": "0x1", "maxFeePerGas": "0x1"},
     "gasPrice: not a field of type 2 transactions (type inferred"),
    ({"type": "0x0", "accessList": []}, "accessList: not a field of type 0"),
    ({"accessList": [{"address": "0x" + "11" * 20, "storageKeys": ["0x12"]}]},
     "accessList[0].storageKeys[0]: must be exactly 32 bytes, got 1"),
    ({"accessList": [{"address": "0x12"}]}, "accessList[0].address: expected"),
    ({"authorizationList": [{"address": "0x" + "11" * 20, "chainId": "0x1", "nonce": "0x0",
                             "r": "0x1", "s": "0x1"}]}, "authorizationList[0].yParity: required"),
    ({"authorizationList": [{"address": "0x" + "11" * 20, "chainId": "0x1", "nonce": "0x0",
                             "r": "0x1", "s": "0x1", "yParity": "0x2"}]},
     "authorizationList[0].yParity: must be 0 or 1"),
]


@pytest.mark.parametrize(("fields", "message"), BAD)
def test_malformed_fields_are_refused_naming_the_json_field(fields, message):
    with pytest.raises(InvalidRequest) as caught:
        rpc_json.transaction_request({"to": "0x" + "11" * 20, **fields})
    assert message in str(caught.value)


def test_core_validation_errors_use_the_json_names():
    request = rpc_json.transaction_request({
        "to": "0x" + "11" * 20, "chainId": "0x1", "nonce": "0x0", "gas": "0x5208",
        "maxFeePerGas": "0x1", "maxPriorityFeePerGas": "0x2"})
    with pytest.raises(InvalidRequest, match=r"^maxPriorityFeePerGas: exceeds max_fee_per_gas"):
        rpc_json.unsigned_transaction(request)
    missing = rpc_json.transaction_request({"to": "0x" + "11" * 20, "gasPrice": "0x1"})
    with pytest.raises(InvalidRequest, match=r"^chainId: required"):
        rpc_json.unsigned_transaction(missing)


BLOB_BASE = {"to": "0x" + "11" * 20, "chainId": "0x1", "nonce": "0x0", "gas": "0x5208",
             "maxFeePerGas": "0x2", "maxPriorityFeePerGas": "0x1", "maxFeePerBlobGas": "0x1",
             "blobVersionedHashes": ["0x01" + "00" * 31]}


@pytest.mark.parametrize(("fields", "message"), [
    ({"blobVersionedHashes": ["0x02" + "00" * 31]},
     "blobVersionedHashes[0]: version byte 0x02, expected 0x01 (KZG)"),
    ({"blobVersionedHashes": ["0x01" + "00" * 30]},
     "blobVersionedHashes[0]: must be exactly 32 bytes, got 31"),
    ({"blobVersionedHashes": []}, "blobVersionedHashes: must not be empty for type 3"),
    ({"blobVersionedHashes": ["0x01" + "00" * 31] * 10},
     "blobVersionedHashes: 10 blobs; a block holds at most 9"),
    ({"to": None}, "to: type 3 (EIP-4844) transactions cannot create contracts"),
    ({"maxFeePerBlobGas": None}, "maxFeePerBlobGas: required"),
])
def test_blob_fields_are_checked_with_their_json_names(fields, message):
    request = rpc_json.transaction_request({**BLOB_BASE, **fields})
    with pytest.raises(InvalidRequest) as caught:
        rpc_json.unsigned_transaction(request)
    assert str(caught.value).startswith(message)
