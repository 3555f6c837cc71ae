"""JSON-RPC benchmark: eth_signTransaction over the JSON-RPC door against gRPC SignTransaction,
same server process, same key, same transaction, same run, at 1, 4 and 16 callers.

Starts a real `wallet-signer serve` with `[jsonrpc]` (env key, audit on the default SQLite
store), checks both routes return the same bytes, then alternates the two routes per caller
count. Each JSON-RPC caller holds one keep-alive HTTP/1.1 connection (as ethers and viem do);
the gRPC callers share one channel (as the core benchmark does).
"""

import http.client
import json
import os
import re
import tempfile
from pathlib import Path

import grpc

from bench.common import Result, closed_loop, print_table
from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc
from tests.support.serve_process import start_serve

SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
KEY = "0x" + "46" * 32
ADDRESS = "0x9d8A62f656a8d1615C1294fd71e9CFb3E4855A4F"  # of KEY
TO = "0x" + "35" * 20
_JSONRPC_PORT = re.compile(r"jsonrpc listening on \S+ \(port (\d+)")


def grpc_request(nonce: int) -> pb.SignTransactionRequest:
    return pb.SignTransactionRequest(key_id="bench", transaction=pb.Transaction(
        type=2, chain_id=1, nonce=nonce, to=TO, value="1000000000000000000", gas_limit=21000,
        max_fee_per_gas="30000000000", max_priority_fee_per_gas="1000000000"))


def jsonrpc_body(nonce: int) -> bytes:
    tx = {"from": ADDRESS, "to": TO, "value": hex(10**18), "gas": hex(21000), "chainId": "0x1",
          "nonce": hex(nonce), "maxFeePerGas": hex(30 * 10**9), "maxPriorityFeePerGas": hex(10**9)}
    return json.dumps({"jsonrpc": "2.0", "id": nonce, "method": "eth_signTransaction",
                       "params": [tx]}).encode()


class JsonRpcCaller:
    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def sign(self, nonce: int) -> str:
        self.connection.request("POST", "/", jsonrpc_body(nonce),
                                {"Content-Type": "application/json"})
        reply = json.loads(self.connection.getresponse().read())
        result: str = reply["result"]
        return result


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        config = Path(workdir) / "bench.toml"
        config.write_text('[server]\nlisten = "127.0.0.1:0"\nmax_workers = 32\n'
                          '[keys.bench]\nbackend = "env"\nprivate_key_env = "BENCH_KEY"\n'
                          '[jsonrpc]\nlisten = "127.0.0.1:0"\n')
        served = start_serve(Path(workdir), config, {"BENCH_KEY": KEY})
        port_match = _JSONRPC_PORT.search(served.log())
        assert port_match, served.log()
        port = int(port_match.group(1))
        try:
            stub = pb_grpc.SignerServiceStub(grpc.insecure_channel(served.target))
            same = stub.SignTransaction(grpc_request(7)).raw_transaction
            assert JsonRpcCaller(port).sign(7) == "0x" + same.hex(), "routes disagree"
            rows: list[Result] = []
            for callers in (1, 4, 16):
                rows.append(closed_loop(
                    "gRPC SignTransaction", callers, SECONDS,
                    lambda caller, n: stub.SignTransaction(grpc_request(caller * 10**6 + n))))
                clients = [JsonRpcCaller(port) for _ in range(callers)]

                def call(caller: int, n: int, c: list[JsonRpcCaller] = clients) -> object:
                    return c[caller].sign(caller * 10**6 + n)

                rows.append(closed_loop("JSON-RPC eth_signTransaction", callers, SECONDS, call))
        finally:
            served.proc.terminate()
            served.proc.wait(30)
    print_table("jsonrpc: eth_signTransaction vs gRPC SignTransaction (same server)", rows, None)
    print(f"{'':44} {'JSON-RPC / gRPC':>24}")
    for grpc_row, json_row in zip(rows[::2], rows[1::2], strict=True):
        print(f"{'callers ' + str(grpc_row.callers):<44} "
              f"{json_row.per_second / grpc_row.per_second:>24.0%}")


if __name__ == "__main__":
    main()
