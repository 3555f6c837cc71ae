"""What every key backend must do, end to end: the same file runs on env, pkcs11 and kms.

Each test gets a fresh key of one backend (`any_signer`), serves it from a real gRPC server,
and checks the results against independent parts: eth-account recovers the signer, and a
py-evm chain (eth-tester) accepts and mines what it signs.
"""

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
import rlp
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_account.typed_transactions import TypedTransaction
from eth_tester import EthereumTester, PyEVMBackend
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes

from signer.service import KeyRing
from signer.v1 import signer_pb2 as pb
from signer.wallet import WalletSigner
from tests.conftest import RunningServer
from tests.support.reference_vectors import TYPED_EXAMPLES, load

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
GWEI = 10**9
ETHER = 10**18
SIGNATURES_PER_BACKEND = 1000
MAIL = load("eip712_mail")["typed_data"]


@pytest.fixture(scope="module")
def chain() -> Iterator[EthereumTester]:
    """One py-evm chain (Prague rules: type 4 included) for the module; every test uses fresh
    accounts on it, so tests cannot see each other's state."""
    yield EthereumTester(PyEVMBackend())


@pytest.fixture
def server(serve, any_signer: WalletSigner) -> RunningServer:  # type: ignore[no-untyped-def]
    """The backend's key served as "k", whatever the fixture named it."""
    signer = WalletSigner("k", any_signer.backend)
    running: RunningServer = serve(KeyRing([signer]))
    return running


def _address(server: RunningServer) -> str:
    return server.stub.GetAddress(pb.GetAddressRequest(key_id="k")).address


def test_get_address_and_list_keys_describe_the_key(server: RunningServer, any_signer):
    reply = server.stub.GetAddress(pb.GetAddressRequest(key_id="k"))
    public_key = bytes(reply.public_key)
    assert len(public_key) == 65 and public_key[0] == 4
    derived = to_checksum_address(keccak(public_key[1:])[-20:])
    assert reply.address == derived == any_signer.address
    assert reply.key_id == "k"
    assert public_key == any_signer.public_key

    (info,) = server.stub.ListKeys(pb.ListKeysRequest()).keys
    assert (info.key_id, info.address, bytes(info.public_key)) == ("k", derived, public_key)
    assert info.backend == any_signer.backend_name
    assert info.backend in ("env", "pkcs11", "kms", "keystore", "vault", "aws-secret")


def _fund(chain: EthereumTester, address: str, amount: int = ETHER) -> None:
    chain.send_transaction({
        "from": chain.get_accounts()[0], "to": address, "value": amount, "gas": 21000,
        "max_fee_per_gas": 100 * GWEI, "max_priority_fee_per_gas": GWEI,
    })
    assert chain.get_balance(address) == amount


def _transaction(tx_type: int, chain_id: int, nonce: int, to: str) -> pb.Transaction:
    msg = pb.Transaction(type=tx_type, chain_id=chain_id, nonce=nonce, to=to,
                         value=str(12345 + tx_type), gas_limit=21000, data=b"")
    if tx_type in (0, 1):
        msg.gas_price = str(10 * GWEI)
    else:
        msg.max_fee_per_gas = str(10 * GWEI)
        msg.max_priority_fee_per_gas = str(GWEI)
    if tx_type != 0:
        msg.gas_limit = 80_000  # the access list and the authorization cost gas
        msg.access_list.add(address="0x" + "5a" * 20, storage_keys=[b"\x01" * 32, b"\x02" * 32])
    return msg


def _authorize(msg: pb.Transaction, chain_id: int, delegate: str) -> str:
    """Add a real EIP-7702 authorization by a fresh account; returns the authority."""
    authority = Account.create()
    auth = Account.sign_authorization(
        {"chainId": chain_id, "address": delegate, "nonce": 0}, authority.key
    )
    msg.authorization_list.add(
        chain_id=auth.chain_id, address=delegate, nonce=auth.nonce, y_parity=auth.y_parity,
        r=auth.r.to_bytes(32, "big"), s=auth.s.to_bytes(32, "big"),
    )
    return str(authority.address)


@pytest.mark.parametrize("tx_type", [0, 1, 2, 4])
def test_every_transaction_type_is_mined_by_a_real_evm(
    server: RunningServer, chain: EthereumTester, tx_type: int
):
    sender = _address(server)
    _fund(chain, sender)
    chain_id = chain.backend.chain.chain_id
    recipient = to_checksum_address(os.urandom(20))
    delegate = to_checksum_address(os.urandom(20))
    msg = _transaction(tx_type, chain_id, chain.get_nonce(sender), recipient)
    authority = _authorize(msg, chain_id, delegate) if tx_type == 4 else None

    reply = server.stub.SignTransaction(pb.SignTransactionRequest(key_id="k", transaction=msg))
    raw = bytes(reply.raw_transaction)
    assert reply.sender == sender
    assert bytes(reply.transaction_hash) == keccak(raw)
    assert Account.recover_transaction(raw) == sender
    r, s = int.from_bytes(reply.signature.r, "big"), int.from_bytes(reply.signature.s, "big")
    assert 0 < s <= SECP256K1_N // 2
    expected_v = {0: (chain_id * 2 + 35, chain_id * 2 + 36)}.get(tx_type, (0, 1))
    assert reply.signature.v in expected_v
    assert (raw[0] == tx_type) if tx_type else raw[0] >= 0xC0

    tx_hash = chain.send_raw_transaction("0x" + raw.hex())
    assert bytes.fromhex(tx_hash.removeprefix("0x")) == keccak(raw)
    receipt = chain.get_transaction_receipt(tx_hash)
    assert receipt["status"] == 1 and receipt["block_number"] is not None
    assert int(str(receipt["type"]), 16) == tx_type
    mined = chain.get_transaction_by_hash(tx_hash)
    assert (mined["r"], mined["s"]) == (r, s)

    fee = receipt["gas_used"] * receipt["effective_gas_price"]
    value = 12345 + tx_type
    assert chain.get_balance(recipient) == value
    assert chain.get_balance(sender) == ETHER - value - fee
    assert chain.get_nonce(sender) == 1
    if authority is not None:
        # EIP-7702 delegation designator: 0xef0100 || delegate address
        assert chain.get_code(authority).lower() == "0xef0100" + delegate[2:].lower()
        assert chain.get_nonce(authority) == 1


# init code: MSTORE8(0, 0x2a); RETURN(0, 1) -> deploys the one-byte runtime code 0x2a
INIT_CODE = bytes.fromhex("602a60005360016000f3")


@pytest.mark.parametrize("tx_type", [0, 1, 2])
def test_contract_creation_is_mined_by_a_real_evm(
    server: RunningServer, chain: EthereumTester, tx_type: int
):
    sender = _address(server)
    _fund(chain, sender)
    msg = _transaction(tx_type, chain.backend.chain.chain_id, 0, to="")
    msg.value, msg.data, msg.gas_limit = "0", INIT_CODE, 200_000
    reply = server.stub.SignTransaction(pb.SignTransactionRequest(key_id="k", transaction=msg))
    assert Account.recover_transaction(bytes(reply.raw_transaction)) == sender

    receipt = chain.get_transaction_receipt(
        chain.send_raw_transaction("0x" + bytes(reply.raw_transaction).hex()))
    assert receipt["status"] == 1
    created = to_checksum_address(keccak(rlp.encode([bytes.fromhex(sender[2:]), 0]))[12:])
    assert receipt["contract_address"] == created
    assert chain.get_code(created) == "0x2a"


def test_structured_and_unsigned_requests_sign_the_same(server: RunningServer, any_signer):
    tx = {"type": 2, "chainId": 5, "nonce": 3, "to": "0x" + "35" * 20, "value": ETHER,
          "gas": 21000, "maxFeePerGas": 30 * GWEI, "maxPriorityFeePerGas": GWEI, "data": b"\x01",
          "accessList": []}
    structured = pb.Transaction(type=2, chain_id=5, nonce=3, to=tx["to"], value=str(ETHER),
                                gas_limit=21000, max_fee_per_gas=str(30 * GWEI),
                                max_priority_fee_per_gas=str(GWEI), data=b"\x01")
    unsigned = b"\x02" + rlp.encode([5, 3, GWEI, 30 * GWEI, 21000, b"\x35" * 20, ETHER, b"\x01",
                                     []])
    # the hand-built payload is what eth-account signs for this dict
    assert keccak(unsigned) == bytes(TypedTransaction.from_dict(dict(tx)).hash())
    replies = [
        server.stub.SignTransaction(pb.SignTransactionRequest(key_id="k", transaction=structured)),
        server.stub.SignTransaction(pb.SignTransactionRequest(key_id="k", unsigned_transaction=unsigned)),
    ]
    for reply in replies:
        raw = bytes(reply.raw_transaction)
        assert Account.recover_transaction(raw) == any_signer.address
        assert _unsigned_part(raw) == {**tx, "to": bytes.fromhex("35" * 20), "accessList": ()}
    # a key in process memory signs with RFC 6979 nonces: deterministic, so byte-identical
    if any_signer.backend_name in ("env", "keystore", "vault", "aws-secret"):
        assert replies[0] == replies[1]


def _unsigned_part(raw: bytes) -> dict[str, Any]:
    decoded = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
    return {k: v for k, v in decoded.items() if k not in ("v", "r", "s")}


def test_messages_and_typed_data_recover_to_the_key(server: RunningServer):
    address = _address(server)
    for message in (b"", b"hello", os.urandom(1000)):
        reply = server.stub.SignMessage(pb.SignMessageRequest(key_id="k", message=message))
        signable = encode_defunct(primitive=message)
        assert Account.recover_message(signable, signature=bytes(reply.signature)) == address
        assert _low_s_rsv(bytes(reply.signature))

    for typed in (MAIL, *TYPED_EXAMPLES.values()):
        reply = server.stub.SignTypedData(
            pb.SignTypedDataRequest(key_id="k", typed_data_json=json.dumps(typed)))
        signable = encode_typed_data(full_message=typed)
        assert Account.recover_message(signable, signature=bytes(reply.signature)) == address
        assert _low_s_rsv(bytes(reply.signature))


def _low_s_rsv(signature: bytes) -> bool:
    s = int.from_bytes(signature[32:64], "big")
    return len(signature) == 65 and 0 < s <= SECP256K1_N // 2 and signature[64] in (27, 28)


def test_a_thousand_signatures_are_low_s_and_recover(server: RunningServer):
    """Backends that return either half of s (HSMs, KMS) must still always give low s.
    Sixteen callers at once, as agents would: slow backends (KMS) finish in seconds."""
    address = _address(server)
    messages = [i.to_bytes(4, "big") + os.urandom(8) for i in range(SIGNATURES_PER_BACKEND)]

    def sign(message: bytes) -> pb.SignMessageResponse:
        return server.stub.SignMessage(pb.SignMessageRequest(key_id="k", message=message),
                                       timeout=60)

    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(sign, messages))
    recovery_ids = set()
    for i, (message, reply) in enumerate(zip(messages, replies, strict=True)):
        signature = bytes(reply.signature)
        assert _low_s_rsv(signature), f"signature {i}: {signature.hex()}"
        assert bytes(reply.digest) == _personal_digest(message)
        recovered = Account.recover_message(encode_defunct(message), signature=signature)
        assert recovered == address, f"signature {i} recovers to {recovered}"
        recovery_ids.add(signature[64])
    assert recovery_ids == {27, 28}  # both parities occur (probability of not: 2**-999)


def _personal_digest(message: bytes) -> bytes:
    return keccak(b"\x19Ethereum Signed Message:\n" + str(len(message)).encode() + message)


def test_stream_signs_a_nonce_sequence_that_a_real_evm_mines(
    server: RunningServer, chain: EthereumTester
):
    """The streaming route on every backend: one stream, every type, consecutive nonces, a bad
    request in the middle answered on its own; the signed ones are mined in order."""
    sender = _address(server)
    _fund(chain, sender)
    chain_id = chain.backend.chain.chain_id
    recipient = to_checksum_address(os.urandom(20))
    messages = [_transaction(t, chain_id, nonce, recipient) for nonce, t in enumerate([0, 1, 2, 4, 2])]
    _authorize(messages[3], chain_id, to_checksum_address(os.urandom(20)))
    requests = [pb.SignTransactionRequest(key_id="k", transaction=m) for m in messages]
    blob_without_hashes = pb.Transaction()
    blob_without_hashes.CopyFrom(messages[2])
    blob_without_hashes.type = 3
    requests.insert(2, pb.SignTransactionRequest(key_id="k", transaction=blob_without_hashes))
    replies = list(server.stub.SignTransactions(iter(requests), timeout=60))

    assert [r.index for r in replies] == list(range(len(requests)))
    assert replies[2].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "blob_versioned_hashes: must not be empty" in replies[2].error.message
    signed = [r.signed for i, r in enumerate(replies) if i != 2]
    for reply in signed:
        raw = bytes(reply.raw_transaction)
        assert Account.recover_transaction(raw) == reply.sender == sender
        assert bytes(reply.transaction_hash) == keccak(raw)
        receipt = chain.get_transaction_receipt(chain.send_raw_transaction("0x" + raw.hex()))
        assert receipt["status"] == 1
    assert chain.get_nonce(sender) == len(signed)
    assert chain.get_balance(recipient) == sum(12345 + t for t in (0, 1, 2, 4, 2))
