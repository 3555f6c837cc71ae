"""EIP-712 hashing (signer.eth.eip712): byte for byte eth-account's `encode_typed_data`, refusing
what it refuses, in time linear in the input and without eth-abi's per-shape caches."""

import copy
import json
import random
from typing import Any

import grpc
import pytest
from eth_abi.registry import registry
from eth_account.messages import _hash_eip191_message, encode_typed_data
from hypothesis import given, settings
from hypothesis import strategies as st

from signer.errors import InvalidRequest
from signer.eth import messages
from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc
from tests.support.serve_process import env_key_config, start_serve

DOMAIN = {"name": "x", "chainId": 1}
DOMAIN_TYPES = [{"name": "name", "type": "string"}, {"name": "chainId", "type": "uint256"}]


def reference(typed: dict[str, Any]) -> bytes:
    return bytes(_hash_eip191_message(encode_typed_data(full_message=copy.deepcopy(typed))))


def ours(typed: dict[str, Any]) -> bytes:
    return messages.load_typed_data(json.dumps(typed)).digest


def chain(types: int, instances: int) -> dict[str, Any]:
    """Types T0 -> T1 -> ... chained (each holds an array of the next), and a message of
    `instances` T1 structs: each one's type string names every type after it. The shape that
    cost eth-account 12 s of CPU at 250 types and 1,500 instances."""
    names = [f"T{i}" for i in range(types)]
    spec = {n: [{"name": "v", "type": "uint256"}, {"name": "next", "type": f"{names[i + 1]}[]"}]
            for i, n in enumerate(names[:-1])}
    spec[names[-1]] = [{"name": "v", "type": "uint256"}]
    message = {"v": 0, "next": [{"v": 1, "next": []} for _ in range(instances)]}
    return {"types": {"EIP712Domain": DOMAIN_TYPES, **spec}, "primaryType": "T0",
            "domain": DOMAIN, "message": message}


def test_a_recursive_type_equals_eth_account():
    tree = {"types": {"EIP712Domain": DOMAIN_TYPES,
                      "Tree": [{"name": "v", "type": "int8"}, {"name": "kids", "type": "Tree[]"}]},
            "primaryType": "Tree", "domain": DOMAIN,
            "message": {"v": -1, "kids": [{"v": 2, "kids": []},
                                          {"v": 3, "kids": [{"v": -128, "kids": []}]}]}}
    assert ours(tree) == reference(tree)


def test_a_deep_chain_equals_eth_account():
    typed = chain(30, 120)
    assert ours(typed) == reference(typed)


@settings(max_examples=60)
@given(order=st.permutations(["name", "version", "chainId", "verifyingContract", "salt"]),
       present=st.sets(st.sampled_from(["name", "version", "chainId", "verifyingContract",
                                        "salt"]), min_size=1))
def test_the_domain_is_hashed_in_eth_accounts_order_whatever_types_lists(order, present):
    kinds = {"name": "string", "version": "string", "chainId": "uint256",
             "verifyingContract": "address", "salt": "bytes32"}
    values = {"name": "n", "version": "1", "chainId": 5,
              "verifyingContract": "0x" + "11" * 20, "salt": "0x" + "22" * 32}
    fields = [k for k in order if k in present]
    typed = {"types": {"EIP712Domain": [{"name": k, "type": kinds[k]} for k in fields],
                       "M": [{"name": "a", "type": "bool"}]},
             "primaryType": "M", "domain": {k: values[k] for k in fields},
             "message": {"a": True}}
    assert ours(typed) == reference(typed)


MAIL = [{"name": "to", "type": "address"}]
REFUSED_BY_BOTH = {
    "domain keys differ from EIP712Domain": {
        "types": {"EIP712Domain": DOMAIN_TYPES, "M": MAIL}, "primaryType": "M",
        "domain": {"name": "x"}, "message": {"to": "0x" + "11" * 20}},
    "primaryType not the root": {
        "types": {"EIP712Domain": DOMAIN_TYPES, "M": MAIL,
                  "W": [{"name": "m", "type": "M"}]},
        "primaryType": "M", "domain": DOMAIN, "message": {"to": "0x" + "11" * 20}},
    "two roots": {
        "types": {"EIP712Domain": DOMAIN_TYPES, "M": MAIL, "N": MAIL},
        "primaryType": "M", "domain": DOMAIN, "message": {"to": "0x" + "11" * 20}},
    "a type used but not defined (in an empty array)": {
        "types": {"EIP712Domain": DOMAIN_TYPES,
                  "M": [{"name": "xs", "type": "Missing[]"}]},
        "primaryType": "M", "domain": DOMAIN, "message": {"xs": []}},
}


@pytest.mark.parametrize("name", REFUSED_BY_BOTH)
def test_what_eth_account_refuses_is_refused(name):
    typed = REFUSED_BY_BOTH[name]
    with pytest.raises(Exception):
        reference(typed)
    with pytest.raises(InvalidRequest, match=r"^typed_data_json: "):
        ours(typed)


def test_no_eth_abi_encoder_is_kept_per_array_length():
    # eth-account encodes an array through eth-abi, which caches an encoder per length: 40
    # requests of ~200 KB grew the server from 88 to 616 MiB
    cached = (registry.get_encoder.cache_info().currsize,
              registry.get_tuple_encoder.cache_info().currsize)
    rng = random.Random(7)
    for length in rng.sample(range(1000, 2000), 20):
        typed = {"types": {"EIP712Domain": DOMAIN_TYPES,
                           "M": [{"name": "xs", "type": "uint256[]"}]},
                 "primaryType": "M", "domain": DOMAIN, "message": {"xs": list(range(length))}}
        ours(typed)
    assert (registry.get_encoder.cache_info().currsize,
            registry.get_tuple_encoder.cache_info().currsize) == cached


def test_a_heavy_legal_request_is_answered_within_a_deadline(tmp_path, env_key):
    # 250 types, 1,500 instances: 12 s of server CPU before (every instance re-derived its
    # type string); the deadline only stands in for "did not stall the server"
    running = start_serve(tmp_path, env_key_config(tmp_path), {"HOT_WALLET_KEY": env_key})
    stub = pb_grpc.SignerServiceStub(grpc.insecure_channel(running.target))
    try:
        text = json.dumps(chain(250, 1500))
        reply = stub.SignTypedData(
            pb.SignTypedDataRequest(key_id="hot", typed_data_json=text), timeout=5)
        assert len(reply.signature) == 65
        with pytest.raises(grpc.RpcError) as caught:  # and the limits still hold
            stub.SignTypedData(pb.SignTypedDataRequest(
                key_id="hot", typed_data_json=json.dumps(chain(300, 300))), timeout=5)
    finally:
        running.proc.kill()
        running.proc.wait(10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "struct types" in caught.value.details()
