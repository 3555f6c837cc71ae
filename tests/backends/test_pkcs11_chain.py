"""Every transaction type signed by a SoftHSM key, over gRPC, is accepted by a py-evm chain."""

import grpc
import pytest
from eth_account import Account
from eth_tester import EthereumTester, PyEVMBackend

from signer.client import RemoteAccount
from signer.service import KeyRing
from signer.v1 import signer_pb2 as pb

RECIPIENT = "0x" + "35" * 20


@pytest.fixture
def chain():
    return EthereumTester(PyEVMBackend())


def test_every_tx_type_mined(serve, pkcs11_signer, chain):
    server = serve(KeyRing([pkcs11_signer]))
    account = RemoteAccount(grpc.insecure_channel(server.target), "hsm")
    address = server.stub.GetAddress(pb.GetAddressRequest(key_id="hsm")).address
    assert account.address == address == pkcs11_signer.address
    funder = chain.get_accounts()[0]
    chain.send_transaction({"from": funder, "to": address, "value": 10**18, "gas": 21000})
    chain_id = int(chain.backend.chain.chain_id)
    fee = 2 * chain.get_block_by_number("pending")["base_fee_per_gas"] + 10**9
    authority = Account.create()
    authorization = Account.sign_authorization(
        {"chainId": chain_id, "address": "0x" + "42" * 20, "nonce": 0}, authority.key)
    common = {"chainId": chain_id, "to": RECIPIENT, "value": 1000, "data": b""}
    txs = [
        {**common, "type": 0, "gas": 21000, "gasPrice": fee},
        {**common, "type": 1, "gas": 30000, "gasPrice": fee,
         "accessList": [{"address": RECIPIENT, "storageKeys": ["0x" + "00" * 32]}]},
        {**common, "type": 2, "gas": 21000, "maxFeePerGas": fee, "maxPriorityFeePerGas": 10**9},
        {**common, "type": 4, "gas": 100000, "maxFeePerGas": fee, "maxPriorityFeePerGas": 10**9,
         "authorizationList": [authorization]},
    ]
    for nonce, tx in enumerate(txs):
        signed = account.sign_transaction({**tx, "nonce": nonce})
        tx_hash = chain.send_raw_transaction(signed.raw_transaction.to_0x_hex())
        receipt = chain.get_transaction_receipt(tx_hash)
        assert receipt["status"] == 1, tx["type"]
        mined = chain.get_transaction_by_hash(tx_hash)
        assert mined["from"] == address and int(mined["type"], 16) == tx["type"]
    assert chain.get_balance(RECIPIENT) == 4000
    assert chain.get_nonce(address) == 4
    # the authority's account now delegates to the authorized address (EIP-7702)
    assert chain.get_code(authority.address) == "0xef0100" + "42" * 20
