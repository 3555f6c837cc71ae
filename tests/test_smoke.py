from eth_account import Account

from signer.v1 import signer_pb2 as pb


def test_env_server_signs_like_eth_account(env_server, env_key):
    tx = {"type": 2, "chainId": 1, "nonce": 0, "to": "0x" + "35" * 20, "value": 1, "gas": 21000,
          "maxFeePerGas": 10, "maxPriorityFeePerGas": 1, "data": b""}
    reply = env_server.stub.SignTransaction(pb.SignTransactionRequest(
        key_id="hot", transaction=pb.Transaction(type=2, chain_id=1, to=tx["to"], value="1",
                                                  gas_limit=21000, max_fee_per_gas="10",
                                                  max_priority_fee_per_gas="1")))
    assert reply.raw_transaction == bytes(Account.sign_transaction(tx, env_key).raw_transaction)


def test_contract_self_test(any_signer):
    any_signer.self_test()
