"""Arbitrary JSON at every method never produces a traceback, an internal error or a secret:
each answer is a JSON-RPC result or one of the EIP-1474 codes, and the door keeps serving."""

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signer.app.caller import Caller
from signer.jsonrpc.dispatch import Dispatcher
from signer.service import KeyRing
from tests.conftest import env_wallet, open_app

KEY = "0x" + "5a" * 32
SIGNER = env_wallet(KEY)
CALLER = Caller("ipv4:127.0.0.1:1", "fuzz")
KNOWN_CODES = {-32700, -32600, -32601, -32602, -32000, -32002, -32003}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**300), 2**300), st.text(max_size=20),
    st.sampled_from(["0x", "0x0", "0x01", "0x" + "f" * 70, SIGNER.address, SIGNER.address.lower(),
                     "0x" + "11" * 20, "0xzz"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(
        ["from", "to", "value", "gas", "nonce", "chainId", "type", "input", "data",
         "accessList", "authorizationList", "maxFeePerGas", "gasPrice", "types", "domain",
         "primaryType", "message", "address", "storageKeys", "yParity", "r", "s"]), inner,
        max_size=6)), max_leaves=12)
methods = st.sampled_from([
    "eth_accounts", "eth_requestAccounts", "eth_sign", "personal_sign", "eth_signTypedData_v4",
    "eth_signTypedData", "eth_signTransaction", "eth_sendTransaction", "wallet_sendTransaction",
    "health_status", "eth_blockNumber", "x"])


@pytest.fixture(scope="module")
def dispatcher(tmp_path_factory: pytest.TempPathFactory) -> Dispatcher:
    app = open_app(KeyRing([SIGNER]), tmp_path_factory.mktemp("state"))
    return Dispatcher(app, app.store, None, 100)


def check(answer_body: bytes | None) -> None:
    assert answer_body is not None
    text = answer_body.decode()
    assert "Traceback" not in text and KEY[2:] not in text
    replies = json.loads(text)
    for reply in replies if isinstance(replies, list) else [replies]:
        assert ("result" in reply) != ("error" in reply)
        if "error" in reply:
            assert reply["error"]["code"] in KNOWN_CODES, reply


@settings(max_examples=300)
@given(methods, st.lists(values, max_size=3))
def test_arbitrary_params_get_a_result_or_a_known_error(dispatcher: Dispatcher, method: str,
                                                        params: list[Any]):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    check(dispatcher.handle(body.encode(), CALLER).body)


@settings(max_examples=200)
@given(st.binary(max_size=200) | values.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bodies_get_a_known_error(dispatcher: Dispatcher, body: bytes):
    answer = dispatcher.handle(body, CALLER)
    if answer.body is not None:
        check(answer.body)
