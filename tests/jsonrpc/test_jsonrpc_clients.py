"""Existing tools sign through the JSON-RPC door unchanged, against a real node (anvil):
cast, ethers v6, viem and web3.py. The signing key is not one of anvil's dev accounts, so a
request that leaked through to anvil would fail."""

import json
import subprocess

from eth_utils.address import to_checksum_address
from web3 import Web3

from tests.jsonrpc.conftest import Anvil, Door, Tools, result, run_node

TO = "0x" + "42" * 20


def cast(tools: Tools, *args: str) -> str:
    done = subprocess.run([str(tools.cast), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_cast_lists_exactly_the_callers_keys(tools: Tools, door: Door):
    accounts = json.loads(cast(tools, "rpc", "--rpc-url", door.url, "eth_accounts"))
    assert accounts == [door.address]


def test_cast_send_unlocked_is_mined_with_casts_nonce_and_fees(tools: Tools, door: Door,
                                                              anvil: Anvil):
    out = cast(tools, "send", "--rpc-url", door.url, "--unlocked", "--from", door.address,
               TO, "--value", "1000", "--json")
    receipt = json.loads(out)
    assert receipt["status"] == "0x1"
    assert to_checksum_address(receipt["from"]) == door.address
    mined = result(anvil.url, "eth_getTransactionByHash", [receipt["transactionHash"]])
    assert mined["nonce"] == "0x0" and mined["type"] == "0x2"


def test_ethers_v6_json_rpc_signer(tools: Tools, door: Door):
    got = run_node(tools, "clients.mjs", "ethers", door.url, door.address, TO)
    assert got["status"] == 1 and got["type"] == 2
    assert got["from"] == door.address
    assert got["messageSigner"] == door.address
    assert got["typedSigner"] == door.address
    assert got["rawFrom"] == door.address and got["rawType"] == 2


def test_viem_json_rpc_account(tools: Tools, door: Door):
    got = run_node(tools, "clients.mjs", "viem", door.url, door.address, TO)
    assert got["status"] == "success" and got["type"] == "eip1559"
    assert to_checksum_address(got["from"]) == door.address
    assert got["messageValid"] is True and got["typedValid"] is True
    assert got["rawFrom"] == door.address and got["rawType"] == "eip1559"


def test_web3py_send_transaction_without_a_local_account(door: Door, anvil: Anvil):
    w3 = Web3(Web3.HTTPProvider(door.url))
    tx_hash = w3.eth.send_transaction({"from": door.address, "to": TO, "value": 5})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=20)
    assert receipt["status"] == 1 and receipt["from"] == door.address
