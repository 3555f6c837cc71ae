"""Helpers for the rotation suites (tests/admin/test_rotation*.py): a config file with a
SQLite store, the application over it, and a transaction signed by key id or by address."""

from pathlib import Path

from eth_account import Account

from signer import config as config_module
from signer.app.caller import Caller
from signer.eth import transactions
from signer.runtime import Runtime

CALLER = Caller(peer="ipv4:127.0.0.1:1", request_id="test")


def tx(to: bytes, value: int = 0, data: bytes = b"", nonce: int = 0) -> transactions.UnsignedTransaction:
    return transactions.UnsignedTransaction(
        type=2, chain_id=1, nonce=nonce, to=to, value=value, gas_limit=100_000, data=data,
        max_fee_per_gas=10**9, max_priority_fee_per_gas=10**9)


def write_config(directory: Path, keys: str) -> Path:
    path = directory / "signer.toml"
    path.write_text(f'[store]\nurl = "sqlite://{directory / "state.db"}"\n{keys}')
    return path


def app(path: Path) -> Runtime:
    runtime = Runtime(config_module.load(path), config_path=path)
    runtime.open_application()
    runtime.app.versions._freshness = 0  # this test reads its own writes at once
    return runtime


def sign(runtime: Runtime, unsigned: transactions.UnsignedTransaction, *,
         key_id: str | None = None, address: bytes | None = None) -> bytes:
    with runtime.app.signing(CALLER, "SignTransaction", key_id, address=address) as request:
        signed = request.sign_transaction(unsigned, 10)
    return signed.raw_transaction


def sender(raw: bytes) -> str:
    return str(Account.recover_transaction(raw))
