"""RemoteAccount is a drop-in for eth-account's LocalAccount, against a real server (env key).

The env backend signs deterministically (RFC 6979), as LocalAccount does, so everything the
remote account returns must equal LocalAccount's result for the same input, byte for byte.
"""

import copy
from typing import Any

import grpc
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct, encode_intended_validator, encode_typed_data
from eth_account.signers.base import BaseAccount
from eth_account.signers.local import LocalAccount
from eth_keys import keys
from eth_tester import EthereumTester, PyEVMBackend
from eth_utils import to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3 import EthereumTesterProvider, Web3
from web3.middleware import SignAndSendRawMiddlewareBuilder

from signer.client import RemoteAccount, SigningRefused
from signer.v1 import signer_pb2 as pb
from tests.conftest import RunningServer
from tests.support.eth_transactions import transactions
from tests.support.reference_vectors import TYPED_EXAMPLES, load

GWEI = 10**9
TO = "0x3535353535353535353535353535353535353535"
DELEGATE = "0x" + "44" * 20
MAIL = load("eip712_mail")["typed_data"]


@pytest.fixture
def remote(env_server: RunningServer) -> RemoteAccount:
    return RemoteAccount(env_server.channel, "hot")


@pytest.fixture
def local(env_key: str) -> LocalAccount:
    return Account.from_key(env_key)


def test_remote_account_is_an_eth_account_with_the_key_address(remote, local):
    assert isinstance(remote, BaseAccount)
    assert remote.address == local.address
    assert remote.key_id == "hot"
    public_key = keys.PrivateKey(bytes(local.key)).public_key
    assert bytes(remote.public_key) == b"\x04" + public_key.to_bytes()


def _authorization(as_model: bool) -> Any:
    signed = Account.sign_authorization(
        {"chainId": 1, "address": DELEGATE, "nonce": 7}, "0x" + "47" * 32
    )
    return signed if as_model else signed.model_dump(by_alias=True)


TRANSACTIONS: dict[str, dict[str, Any]] = {
    "legacy ints": {"nonce": 9, "gasPrice": 20 * GWEI, "gas": 21000, "to": TO, "value": 10**18,
                    "data": b"", "chainId": 1},
    "legacy hex strings": {"nonce": "0x9", "gasPrice": hex(20 * GWEI), "gas": "0x5208", "to": TO,
                           "value": hex(10**18), "data": "0xdeadbeef", "chainId": "0x1"},
    "legacy contract creation": {"nonce": 0, "gasPrice": 1, "gas": 100000, "to": "",
                                 "value": 0, "data": "0x6000", "chainId": 1337},
    "type 1": {"type": 1, "nonce": 1, "gasPrice": 5, "gas": 50000, "to": TO, "value": 1,
               "data": b"\x01\x02", "chainId": 10,
               "accessList": [{"address": DELEGATE,
                               "storageKeys": ["0x" + "00" * 31 + "01", "0x" + "ff" * 32]}]},
    "type 1 inferred from accessList": {
        "nonce": 1, "gasPrice": 5, "gas": 50000, "to": TO, "value": 1, "chainId": 10,
        "accessList": [{"address": DELEGATE, "storageKeys": []}]},
    "type 2": {"type": 2, "nonce": 3, "maxFeePerGas": 30 * GWEI, "maxPriorityFeePerGas": GWEI,
               "gas": 21000, "to": TO, "value": 2**256 - 1, "data": b"", "chainId": 8453},
    "type 2 hex strings, type inferred": {
        "nonce": "0x3", "maxFeePerGas": hex(30 * GWEI), "maxPriorityFeePerGas": hex(GWEI),
        "gas": hex(21000), "to": TO, "value": "0x0", "data": "0x", "chainId": "0x2105"},
    "type 2 hex type": {"type": "0x2", "nonce": 0, "maxFeePerGas": 2, "maxPriorityFeePerGas": 1,
                        "gas": 21000, "to": TO, "value": 0, "chainId": 1},
    "type 4 model authorization": {
        "type": 4, "nonce": 0, "maxFeePerGas": 30 * GWEI, "maxPriorityFeePerGas": GWEI,
        "gas": 100000, "to": TO, "value": 0, "data": b"", "chainId": 1, "accessList": [],
        "authorizationList": "model"},
    "type 4 dict authorization, hex": {
        "type": "0x4", "nonce": "0x1", "maxFeePerGas": hex(30 * GWEI),
        "maxPriorityFeePerGas": hex(GWEI), "gas": hex(100000), "to": TO, "value": "0x1",
        "chainId": "0x1", "authorizationList": "dict"},
    "type 3": {"type": 3, "nonce": 2, "maxFeePerGas": 30 * GWEI, "maxPriorityFeePerGas": GWEI,
               "maxFeePerBlobGas": 3 * GWEI, "gas": 21000, "to": TO, "value": 0, "data": b"",
               "chainId": 1, "accessList": [],
               "blobVersionedHashes": [b"\x01" + b"\x11" * 31, "0x01" + "22" * 31]},
    "type 3 inferred, hex": {
        "nonce": "0x2", "maxFeePerGas": hex(30 * GWEI), "maxPriorityFeePerGas": hex(GWEI),
        "maxFeePerBlobGas": "0x1", "gas": "0x5208", "to": TO, "value": "0x0", "chainId": "0x1",
        "blobVersionedHashes": ["0x01" + "33" * 31]},
}


def _materialize(tx: dict[str, Any]) -> dict[str, Any]:
    tx = copy.deepcopy(tx)
    if "authorizationList" in tx:
        tx["authorizationList"] = [_authorization(tx["authorizationList"] == "model")]
    return tx


@pytest.mark.parametrize("name", list(TRANSACTIONS))
def test_sign_transaction_equals_local_account(name: str, remote, local):
    ours = remote.sign_transaction(_materialize(TRANSACTIONS[name]))
    theirs = local.sign_transaction(_materialize(TRANSACTIONS[name]))
    assert bytes(ours.raw_transaction) == bytes(theirs.raw_transaction)
    assert bytes(ours.hash) == bytes(theirs.hash)
    assert (ours.r, ours.s, ours.v) == (theirs.r, theirs.s, theirs.v)
    assert Account.recover_transaction(ours.raw_transaction) == remote.address


def _as_hex(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    return hex(value)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(tx=st.sampled_from([0, 1, 2, 3, 4]).flatmap(transactions), hex_keys=st.sets(
    st.sampled_from(["nonce", "gas", "value", "gasPrice", "maxFeePerGas", "maxPriorityFeePerGas",
                     "maxFeePerBlobGas", "chainId"])),
    hex_data=st.booleans())
def test_random_transactions_sign_like_local_account(remote, local, tx, hex_keys, hex_data):
    """Random valid dicts of every type, quantities as ints or 0x strings, data as bytes or hex."""
    rendered = {k: _as_hex(v) if k in hex_keys else v for k, v in tx.items()}
    if hex_data:
        rendered["data"] = "0x" + tx["data"].hex()
    ours = remote.sign_transaction(copy.deepcopy(rendered))
    theirs = local.sign_transaction(copy.deepcopy(rendered))
    assert bytes(ours.raw_transaction) == bytes(theirs.raw_transaction)
    assert (bytes(ours.hash), ours.r, ours.s, ours.v) == (
        bytes(theirs.hash), theirs.r, theirs.s, theirs.v)


def _same_signed(ours: Any, theirs: Any) -> None:
    assert bytes(ours.raw_transaction) == bytes(theirs.raw_transaction)
    assert (bytes(ours.hash), ours.r, ours.s, ours.v) == (
        bytes(theirs.hash), theirs.r, theirs.s, theirs.v)


def test_sign_transactions_equals_local_account_in_order(remote, local):
    results = remote.sign_transactions([_materialize(tx) for tx in TRANSACTIONS.values()])
    assert len(results) == len(TRANSACTIONS)
    for ours, tx in zip(results, TRANSACTIONS.values(), strict=True):
        _same_signed(ours, local.sign_transaction(_materialize(tx)))


def test_sign_transactions_answers_each_refusal_in_its_place(remote, local):
    """Each result is what sign_transaction returns or raises for that dict; one refusal (here
    or on the server) does not stop the others."""
    good = _materialize(TRANSACTIONS["type 2"])
    batch = [
        good,
        {**good, "from": "0x" + "11" * 20},           # refused here: not this account
        {**good, "chainId": 0},                       # refused by the server: chain_id
        {**good, "bogus": 1},                         # refused here: unknown field
        {**good, "type": 3},                          # refused by the server: blob
        {**good, "nonce": 4},
    ]
    results = remote.sign_transactions(batch)
    assert len(results) == len(batch)
    for tx, result in zip(batch, results, strict=True):
        try:
            expected: Any = remote.sign_transaction(tx)
        except grpc.RpcError as error:
            assert isinstance(result, SigningRefused) and isinstance(error, SigningRefused)
            assert (result.code(), result.details()) == (error.code(), error.details())
            assert result.code() == grpc.StatusCode.INVALID_ARGUMENT
        except (ValueError, TypeError) as error:
            assert type(result) is type(error) and str(result) == str(error)
        else:
            _same_signed(result, expected)
            _same_signed(result, local.sign_transaction(tx))
    assert "chain_id" in str(results[2]) and "blob" in str(results[4])
    assert remote.sign_transactions([]) == []


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batch=st.lists(st.sampled_from([0, 1, 2, 3, 4]).flatmap(transactions), max_size=12))
def test_random_batches_sign_like_local_account(remote, local, batch):
    results = remote.sign_transactions(copy.deepcopy(batch))
    assert len(results) == len(batch)
    for ours, tx in zip(results, batch, strict=True):
        _same_signed(ours, local.sign_transaction(copy.deepcopy(tx)))


def test_from_is_checked(remote, local):
    tx = _materialize(TRANSACTIONS["type 2"])
    for sender in (remote.address, remote.address.lower()):
        signed = remote.sign_transaction({**tx, "from": sender})
        assert bytes(signed.raw_transaction) == bytes(local.sign_transaction(tx).raw_transaction)
    other = Account.create().address
    with pytest.raises(ValueError, match="is not this account"):
        remote.sign_transaction({**tx, "from": other})


@pytest.mark.parametrize(
    "signable",
    [encode_defunct(text="I ♥ SF"), encode_defunct(hexstr="0x68656c6c6f"),
     encode_defunct(primitive=b""), encode_defunct(primitive=bytes(range(256)) * 4)],
    ids=["text", "hexstr", "empty", "1 KiB"],
)
def test_sign_message_equals_local_account(signable, remote, local):
    ours, theirs = remote.sign_message(signable), local.sign_message(signable)
    assert bytes(ours.signature) == bytes(theirs.signature)
    assert bytes(ours.message_hash) == bytes(theirs.message_hash)
    assert (ours.r, ours.s, ours.v) == (theirs.r, theirs.s, theirs.v)


def test_sign_message_refuses_other_eip191_versions(remote):
    for signable in (encode_intended_validator(TO, b"hi"), encode_typed_data(full_message=MAIL)):
        with pytest.raises(ValueError, match="personal messages"):
            remote.sign_message(signable)


@pytest.mark.parametrize("name", ["mail", *TYPED_EXAMPLES])
def test_sign_typed_data_full_message_equals_local_account(name: str, remote, local):
    typed = MAIL if name == "mail" else TYPED_EXAMPLES[name]
    ours = remote.sign_typed_data(full_message=copy.deepcopy(typed))
    theirs = local.sign_typed_data(full_message=copy.deepcopy(typed))
    assert bytes(ours.signature) == bytes(theirs.signature)
    assert bytes(ours.message_hash) == bytes(theirs.message_hash)


def _three_argument_forms() -> dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    forms = {}
    for name, typed in {"mail": MAIL, **TYPED_EXAMPLES}.items():
        types = {k: v for k, v in typed["types"].items() if k != "EIP712Domain"}
        forms[name] = (typed["domain"], types, typed["message"])
    # bytes values (the client serializes them to JSON), domain keys in non-canonical order
    forms["bytes values"] = (
        {"verifyingContract": TO, "chainId": 5, "salt": b"\x07" * 32, "name": "n"},
        {"Blob": [{"name": "tag", "type": "bytes4"}, {"name": "body", "type": "bytes"},
                  {"name": "root", "type": "bytes32"}]},
        {"tag": b"\x01\x02\x03\x04", "body": b"\x00" * 100, "root": b"\xaa" * 32},
    )
    return forms


@pytest.mark.parametrize("name", list(_three_argument_forms()))
def test_sign_typed_data_three_arguments_equals_local_account(name: str, remote, local):
    domain, types, message = _three_argument_forms()[name]
    ours = remote.sign_typed_data(*copy.deepcopy((domain, types, message)))
    theirs = local.sign_typed_data(*copy.deepcopy((domain, types, message)))
    assert bytes(ours.signature) == bytes(theirs.signature)
    assert bytes(ours.message_hash) == bytes(theirs.message_hash)


def test_sign_typed_data_three_arguments_recursive_primary_type(remote, local):
    types = {"Node": [{"name": "value", "type": "uint256"}, {"name": "children", "type": "Node[]"}]}
    message = {"value": 1, "children": [{"value": 2, "children": []}]}
    domain = {"name": "tree", "chainId": 1}
    assert bytes(remote.sign_typed_data(domain, types, message).signature) == bytes(
        local.sign_typed_data(domain, types, message).signature)


def test_no_bare_hash_signing(remote):
    with pytest.raises(NotImplementedError, match="never signs a bare hash"):
        remote.unsafe_sign_hash(b"\x11" * 32)
    methods = pb.DESCRIPTOR.services_by_name["SignerService"].methods_by_name
    assert set(methods) == {"ListKeys", "GetAddress", "SignTransaction", "SignTransactions",
                            "SignMessage", "SignTypedData", "SignAuthorization", "EvaluatePolicy",
                            "Reload"}


def test_web3_sign_and_send_middleware_with_remote_account(env_server: RunningServer):
    """The docs' use case (README, docs/using/python.md): swap a LocalAccount for a
    RemoteAccount in web3.py."""
    account = RemoteAccount.connect(env_server.target, "hot")
    w3 = Web3(EthereumTesterProvider(EthereumTester(PyEVMBackend())))
    w3.middleware_onion.inject(SignAndSendRawMiddlewareBuilder.build(account), layer=0)

    funder = w3.eth.accounts[0]
    w3.eth.wait_for_transaction_receipt(
        w3.eth.send_transaction({"from": funder, "to": account.address, "value": 10**18}))
    assert w3.eth.get_balance(account.address) == 10**18

    recipient = to_checksum_address("0x" + "ab" * 20)
    tx_hash = w3.eth.send_transaction(
        {"from": account.address, "to": recipient, "value": 12345})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    assert receipt["from"] == account.address
    assert w3.eth.get_balance(recipient) == 12345
    fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert w3.eth.get_balance(account.address) == 10**18 - 12345 - fee
    assert w3.eth.get_transaction_count(account.address) == 1


# --- EIP-7702 authorizations and blobs ----------------------------------------------------------


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(chain_id=st.integers(0, 2**64 - 1), nonce=st.integers(0, 2**64 - 2),
       delegate=st.binary(min_size=20, max_size=20),
       spelling=st.sampled_from(["checksum", "lower", "bytes"]))
def test_sign_authorization_equals_local_account(remote, local, chain_id, nonce, delegate,
                                                 spelling):
    address: Any = {"checksum": to_checksum_address(delegate), "lower": "0x" + delegate.hex(),
                    "bytes": delegate}[spelling]
    request = {"chainId": chain_id, "address": address, "nonce": nonce}
    ours = remote.sign_authorization(dict(request))
    theirs = local.sign_authorization(dict(request))
    assert type(ours) is type(theirs)
    assert ours == theirs
    assert (ours.signature, ours.authorization_hash) == (theirs.signature,
                                                         theirs.authorization_hash)
    assert ours.authority == theirs.authority == bytes.fromhex(remote.address[2:])
    assert ours.model_dump(by_alias=True) == theirs.model_dump(by_alias=True)


def test_an_authorization_signed_remotely_goes_into_a_type_4_transaction(remote, local):
    auth = remote.sign_authorization({"chainId": 1, "address": DELEGATE, "nonce": 1})
    tx = {"type": 4, "nonce": 0, "maxFeePerGas": 30 * GWEI, "maxPriorityFeePerGas": GWEI,
          "gas": 100000, "to": remote.address, "value": 0, "data": b"", "chainId": 1,
          "accessList": [], "authorizationList": [auth]}
    _same_signed(remote.sign_transaction(copy.deepcopy(tx)), local.sign_transaction(tx))
    (streamed,) = remote.sign_transactions([copy.deepcopy(tx)])
    _same_signed(streamed, local.sign_transaction(copy.deepcopy(tx)))


def test_sign_authorization_refuses_what_eth_account_refuses(remote):
    with pytest.raises(TypeError, match="must be dict-like"):
        remote.sign_authorization([1, DELEGATE, 0])
    with pytest.raises(SigningRefused) as caught:
        remote.sign_authorization({"chainId": 1, "address": DELEGATE, "nonce": 2**64 - 1})
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("nonce: 18446744073709551615 exceeds")


@pytest.fixture
def cached_kzg_setup(monkeypatch):
    """eth-account reloads the KZG trusted setup (seconds) for each value it makes: hand it the
    one signer.eth.blobs loaded from the same file (pinned sha256); its KZG code is unchanged."""
    import eth_account.typed_transactions.base as eth_account_kzg

    from signer.eth.blobs import trusted_setup

    monkeypatch.setattr(eth_account_kzg, "load_trusted_setup",
                        lambda path, precompute: trusted_setup())


def test_sign_transaction_with_blobs_is_eth_accounts_network_form(remote, local,
                                                                  cached_kzg_setup):
    from signer.eth.blobs import sidecar

    blob = (b"\x00" + b"\x5a" * 31) * 4096
    hashes = list(sidecar([blob]).versioned_hashes)
    tx = {"type": 3, "nonce": 0, "maxFeePerGas": 30 * GWEI, "maxPriorityFeePerGas": GWEI,
          "maxFeePerBlobGas": GWEI, "gas": 21000, "to": TO, "value": 0, "data": b"",
          "chainId": 1, "accessList": [], "blobVersionedHashes": hashes}
    theirs = local.sign_transaction(copy.deepcopy(tx), blobs=[blob])
    without_hashes = {k: v for k, v in tx.items() if k != "blobVersionedHashes"}
    for request in (tx, without_hashes):
        ours = remote.sign_transaction(copy.deepcopy(request), blobs=[blob])
        assert bytes(ours.raw_transaction) == bytes(theirs.raw_transaction)
        assert (ours.r, ours.s, ours.v) == (theirs.r, theirs.s, theirs.v)
        payload = local.sign_transaction(copy.deepcopy(tx))  # what a node hashes
        assert bytes(ours.hash) == bytes(payload.hash)
    with pytest.raises(ValueError, match="do not match the versioned hashes"):
        remote.sign_transaction({**tx, "blobVersionedHashes": ["0x01" + "00" * 31]},
                                blobs=[blob])


def test_every_unary_refusal_is_signing_refused(remote, env_server: RunningServer):
    with pytest.raises(SigningRefused) as caught:
        remote.sign_transaction({**_materialize(TRANSACTIONS["type 2"]), "chainId": 0})
    refused = caught.value
    assert isinstance(refused, grpc.RpcError)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details() == "chain_id: required (legacy transactions are always EIP-155 signed)"
    assert (refused.policy, refused.rule, refused.reason) == (None, None, None)
    assert dict(refused.trailing_metadata())["x-request-id"]
    with pytest.raises(SigningRefused) as caught:
        RemoteAccount(env_server.channel, "nope")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError):  # handlers written for grpc's errors keep working
        remote.sign_message(encode_defunct(primitive=b"x" * (5 * 1024 * 1024)))


def test_bad_blobs_are_refused_here_as_value_errors(remote):
    tx = {"type": 3, "nonce": 0, "maxFeePerGas": 2, "maxPriorityFeePerGas": 1,
          "maxFeePerBlobGas": 1, "gas": 21000, "to": TO, "value": 0, "chainId": 1}
    with pytest.raises(ValueError, match="blobs\\[0\\]: must be exactly 131072 bytes, got 3"):
        remote.sign_transaction(tx, blobs=[b"\x00\x01\x02"])
