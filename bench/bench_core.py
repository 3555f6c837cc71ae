"""Core benchmark: SignTransaction over gRPC (env key) against the raw signing cost.

Starts a real `wallet-signer serve` process on loopback, drives it with 1, 4 and 16 concurrent
callers, and measures in the same run: the backend's digest signing alone, and eth-account's
own sign_transaction for the same transaction. Ratios put the service's overhead in numbers.
"""

import os
import tempfile
from pathlib import Path
from typing import Any

import grpc
from eth_account import Account

from bench.common import Result, closed_loop, print_table
from signer.backends.env import EnvBackend, parse_private_key
from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc
from tests.support.serve_process import ServeProcess, start_serve

SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
KEY = "0x" + "46" * 32
TX: dict[str, Any] = {"type": 2, "chainId": 1, "nonce": 0, "to": "0x" + "35" * 20, "value": 10**18,
      "gas": 21000, "maxFeePerGas": 30 * 10**9, "maxPriorityFeePerGas": 10**9, "data": b""}
REQUEST = pb.SignTransactionRequest(key_id="bench", transaction=pb.Transaction(
    type=2, chain_id=1, to=TX["to"], value=str(TX["value"]), gas_limit=21000,
    max_fee_per_gas=str(TX["maxFeePerGas"]), max_priority_fee_per_gas=str(TX["maxPriorityFeePerGas"]),
))


def start_server(workdir: Path) -> ServeProcess:
    config = workdir / "bench.toml"
    config.write_text('[server]\nlisten = "127.0.0.1:0"\nmax_workers = 32\n'
                      '[keys.bench]\nbackend = "env"\nprivate_key_env = "BENCH_KEY"\n')
    return start_serve(workdir, config, {"BENCH_KEY": KEY})


def main() -> None:
    backend = EnvBackend(parse_private_key(KEY, "bench key"))
    digest = bytes(32)
    raw_digest = closed_loop("raw: env backend sign_digest", 1, SECONDS,
                             lambda caller, n: backend.sign_digest(digest, None))
    raw_eth = closed_loop("raw: eth-account sign_transaction", 1, SECONDS,
                          lambda caller, n: Account.sign_transaction(TX, KEY))
    with tempfile.TemporaryDirectory() as workdir:
        served = start_server(Path(workdir))
        proc, target = served.proc, served.target
        try:
            channel = grpc.insecure_channel(target)
            stub = pb_grpc.SignerServiceStub(channel)
            expected = Account.sign_transaction(TX, KEY).raw_transaction
            assert stub.SignTransaction(REQUEST).raw_transaction == bytes(expected)
            rows: list[Result] = []
            for callers in (1, 4, 16):
                stubs = [pb_grpc.SignerServiceStub(channel) for _ in range(callers)]

                def call(caller: int, n: int, s: list[Any] = stubs) -> object:
                    return s[caller].SignTransaction(REQUEST)

                rows.append(closed_loop("gRPC SignTransaction (env key)", callers, SECONDS, call))
        finally:
            proc.terminate()
            proc.wait(30)
    print_table("core: env key (ratios vs eth-account signing in-process)", [raw_digest, raw_eth, *rows], raw_eth)


if __name__ == "__main__":
    main()
