"""A KMS key behind the real gRPC server: every transaction type mined on a py-evm chain,
personal messages and EIP-712 recovered, and 1,000 signatures checked for low s and recovery."""

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_keys import keys

from signer.client import RemoteAccount
from signer.eth.signature import HALF_N
from signer.service import KeyRing
from signer.v1 import signer_pb2 as pb

RECIPIENT = "0x" + "35" * 20
GWEI = 10**9
AUTHORITY = Account.create()  # an EOA that delegates its code in the type-4 transaction
DELEGATE = "0x" + "42" * 20


@pytest.fixture(scope="module")
def chain():
    from eth_tester import EthereumTester, PyEVMBackend

    return EthereumTester(PyEVMBackend())


@pytest.fixture
def kms_account(serve, kms_signer):
    running = serve(KeyRing({"ops": kms_signer}))
    return RemoteAccount(running.channel, "ops", timeout=30)


def _fund(chain, address, value=10**18):
    chain.send_transaction({"from": chain.get_accounts()[0], "to": address, "value": value,
                            "gas": 21000, "max_fee_per_gas": 10 * GWEI,
                            "max_priority_fee_per_gas": GWEI})


def _transaction(tx_type, chain_id, nonce=0):
    tx = {"type": tx_type, "chainId": chain_id, "nonce": nonce, "to": RECIPIENT, "value": 12345,
          "gas": 100_000}
    if tx_type in (0, 1):
        tx["gasPrice"] = 10 * GWEI
    else:
        tx["maxFeePerGas"], tx["maxPriorityFeePerGas"] = 10 * GWEI, GWEI
    if tx_type == 1:
        tx["accessList"] = [{"address": RECIPIENT, "storageKeys": ["0x" + "00" * 31 + "01"]}]
    if tx_type == 4:
        authorization = AUTHORITY.sign_authorization(
            {"chainId": chain_id, "address": DELEGATE, "nonce": 0})
        tx["authorizationList"] = [authorization]
    return tx


@pytest.mark.parametrize("tx_type", [0, 1, 2, 4])
def test_every_transaction_type_is_mined(chain, kms_account, tx_type):
    chain_id = chain.backend.chain.chain_id
    _fund(chain, kms_account.address)
    before = chain.get_balance(RECIPIENT)
    signed = kms_account.sign_transaction(_transaction(tx_type, chain_id))
    tx_hash = chain.send_raw_transaction(signed.raw_transaction.to_0x_hex())
    assert bytes.fromhex(tx_hash.removeprefix("0x")) == bytes(signed.hash)
    receipt = chain.get_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    assert int(receipt["type"], 16) == tx_type
    assert chain.get_balance(RECIPIENT) == before + 12345
    assert chain.get_transaction_by_hash(tx_hash)["from"] == kms_account.address
    assert Account.recover_transaction(signed.raw_transaction) == kms_account.address
    if tx_type == 4:  # EIP-7702: the authority's code is now a delegation designator
        assert chain.get_code(AUTHORITY.address) == "0xef0100" + "42" * 20


def test_sign_message_recovers(kms_account):
    message = encode_defunct(text="ask the KMS key")
    signed = kms_account.sign_message(message)
    assert Account.recover_message(message, signature=signed.signature) == kms_account.address
    assert signed.v in (27, 28)


def test_sign_typed_data_recovers(kms_account):
    typed = {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"},
                             {"name": "chainId", "type": "uint256"}],
            "Person": [{"name": "name", "type": "string"}, {"name": "wallets",
                                                            "type": "address[]"}],
            "Mail": [{"name": "from", "type": "Person"}, {"name": "to", "type": "Person[]"},
                     {"name": "contents", "type": "string"}],
        },
        "primaryType": "Mail",
        "domain": {"name": "Ether Mail", "chainId": 1},
        "message": {"from": {"name": "Cow", "wallets": [RECIPIENT]},
                    "to": [{"name": "Bob", "wallets": []}], "contents": "Hello, Bob!"},
    }
    signed = kms_account.sign_typed_data(full_message=typed)
    recovered = Account.recover_message(encode_typed_data(full_message=typed),
                                        signature=signed.signature)
    assert recovered == kms_account.address


def test_thousand_signatures_are_low_s_and_recover(serve, kms_signer):
    running = serve(KeyRing({"ops": kms_signer}))
    address = running.stub.GetAddress(pb.GetAddressRequest(key_id="ops"), timeout=10).address

    def sign(i: int) -> tuple[bytes, bytes]:
        reply = running.stub.SignMessage(
            pb.SignMessageRequest(key_id="ops", message=i.to_bytes(4, "big")), timeout=30)
        return reply.signature, reply.digest

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(sign, range(1000)))
    assert len({signature for signature, _ in results}) == 1000
    for signature, digest in results:
        s = int.from_bytes(signature[32:64], "big")
        assert 0 < s <= HALF_N
        recovered = keys.Signature(signature[:64] + bytes([signature[64] - 27]))
        assert recovered.recover_public_key_from_msg_hash(digest).to_checksum_address() == address


def test_unknown_key_is_not_found(serve, kms_signer):
    running = serve(KeyRing({"ops": kms_signer}))
    with pytest.raises(grpc.RpcError) as caught:
        running.stub.SignMessage(pb.SignMessageRequest(key_id="nope", message=b"x"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
