"""Core benchmark: SignTransaction over gRPC (env key) against the raw signing cost.

Starts a real `wallet-signer serve` process on loopback, drives it with 1, 4 and 16 concurrent
callers, and measures in the same run: the backend's digest signing alone, and eth-account's
own sign_transaction for the same transaction. Ratios put the service's overhead in numbers.
A type 3 (blob) payload with three versioned hashes is measured the same way at 1 and 16
callers, beside eth-account signing the same payload (no sidecar: the signer never sees one).
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
# a batch poster's transaction: three blobs' versioned hashes, to an inbox, no calldata
BLOB_HASHES = [bytes([1]) + bytes([n]) * 31 for n in (1, 2, 3)]
BLOB_TX = {**TX, "type": 3, "value": 0, "maxFeePerBlobGas": 10**9, "accessList": [],
           "blobVersionedHashes": BLOB_HASHES}
BLOB_REQUEST = pb.SignTransactionRequest(key_id="bench", transaction=pb.Transaction(
    type=3, chain_id=1, to=TX["to"], gas_limit=21000, max_fee_per_gas=str(TX["maxFeePerGas"]),
    max_priority_fee_per_gas=str(TX["maxPriorityFeePerGas"]), max_fee_per_blob_gas=str(10**9),
    blob_versioned_hashes=BLOB_HASHES,
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
    raw_blob = closed_loop("raw: eth-account sign_transaction type 3", 1, SECONDS,
                           lambda caller, n: Account.sign_transaction(BLOB_TX, KEY))
    with tempfile.TemporaryDirectory() as workdir:
        served = start_server(Path(workdir))
        proc, target = served.proc, served.target
        try:
            channel = grpc.insecure_channel(target)
            stub = pb_grpc.SignerServiceStub(channel)
            expected = Account.sign_transaction(TX, KEY).raw_transaction
            assert stub.SignTransaction(REQUEST).raw_transaction == bytes(expected)
            expected_blob = Account.sign_transaction(BLOB_TX, KEY).raw_transaction
            assert stub.SignTransaction(BLOB_REQUEST).raw_transaction == bytes(expected_blob)
            rows: list[Result] = []
            for label, request, counts in (
                ("gRPC SignTransaction (env key)", REQUEST, (1, 4, 16)),
                ("gRPC SignTransaction type 3 (env key)", BLOB_REQUEST, (1, 16)),
            ):
                for callers in counts:
                    stubs = [pb_grpc.SignerServiceStub(channel) for _ in range(callers)]

                    def call(caller: int, n: int, s: list[Any] = stubs,
                             r: pb.SignTransactionRequest = request) -> object:
                        return s[caller].SignTransaction(r)

                    rows.append(closed_loop(label, callers, SECONDS, call))
        finally:
            proc.terminate()
            proc.wait(30)
    print_table("core: env key (ratios vs eth-account signing in-process)",
                [raw_digest, raw_eth, raw_blob, *rows], raw_eth)


if __name__ == "__main__":
    main()
