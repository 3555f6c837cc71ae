"""KMS benchmark: SignTransaction over gRPC vs raw boto3 `Sign`, same emulator, same run.

The emulator (moto in a subprocess, tests/support/kms_emulator.py) adds a fixed latency to every Sign, as
a network round trip to KMS would (BENCH_KMS_LATENCY_MS, default 20; BENCH_SECONDS per run). The service runs as a real `wallet-signer serve` subprocess.
At each concurrency level both sides get the same number of callers for the same time; the ratio
shows whether the service keeps KMS calls concurrent (it must not serialize them).
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bench.common import closed_loop
from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc
from tests.support.kms_emulator import Emulator, emulator_environment
from tests.support.serve_process import start_serve

LATENCY_SECONDS = float(os.environ.get("BENCH_KMS_LATENCY_MS", "20")) / 1000
CONCURRENCY = (1, 8, 32)
SECONDS_PER_RUN = float(os.environ.get("BENCH_SECONDS", "2"))
# Raw and service runs alternate, and each side reports its median round: on a shared machine
# background load drifts, and alternating keeps the drift from favouring one side.
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
REGION = "us-east-1"
TRANSACTION = pb.Transaction(
    type=2, chain_id=1, nonce=7, to="0x" + "35" * 20, value="1000000000000000000",
    gas_limit=21000, max_fee_per_gas="30000000000", max_priority_fee_per_gas="1000000000",
)


def main() -> None:
    os.environ.update(emulator_environment())
    with Emulator.start() as emulator:
        raw_client = _boto3_client(emulator.endpoint_url)
        key_id = raw_client.create_key(KeySpec="ECC_SECG_P256K1", KeyUsage="SIGN_VERIFY")[
            "KeyMetadata"]["KeyId"]
        server, target = _start_service(emulator.endpoint_url, key_id)
        try:
            channel = grpc.insecure_channel(target)
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = pb_grpc.SignerServiceStub(channel)
            emulator.add_fault(operation="Sign", latency=LATENCY_SECONDS)
            _report(_measure(raw_client, key_id, stub, (emulator.process.pid, server.pid)))
        finally:
            server.terminate()
            server.wait(15)


Row = tuple[int, "Run", "Run"]


@dataclass(frozen=True)
class Run:
    rate: float  # calls per second
    p50_ms: float
    cpu_ms: tuple[float, float, float]  # CPU per call: emulator, service, this (caller) process


def _measure(raw_client: Any, key_id: str, stub: Any, pids: tuple[int, int]) -> list[Row]:
    digest = bytes(range(32))
    request = pb.SignTransactionRequest(key_id="bench", transaction=TRANSACTION)

    def raw() -> None:
        raw_client.sign(KeyId=key_id, Message=digest, MessageType="DIGEST",
                        SigningAlgorithm="ECDSA_SHA_256")

    def service() -> None:
        stub.SignTransaction(request, timeout=10)

    _run(raw, 4, 0.5, pids)  # warm up connections on both sides
    _run(service, 4, 0.5, pids)
    rows: list[Row] = []
    for callers in CONCURRENCY:
        raw_runs, service_runs = [], []
        for _ in range(ROUNDS):
            raw_runs.append(_run(raw, callers, SECONDS_PER_RUN, pids))
            service_runs.append(_run(service, callers, SECONDS_PER_RUN, pids))
        rows.append((callers, _median(raw_runs), _median(service_runs)))
    return rows


def _median(runs: list["Run"]) -> "Run":
    return sorted(runs, key=lambda run: run.rate)[len(runs) // 2]


def _run(call: Callable[[], None], callers: int, seconds: float, pids: tuple[int, int]) -> Run:
    """`callers` threads calling `call` back to back for `seconds`, with the CPU each process
    spent per call (emulator, service, this process)."""
    cpu_before = (*(_process_cpu(pid) for pid in pids), time.process_time())
    result = closed_loop("kms", callers, seconds, lambda caller, n: call())
    cpu_after = (*(_process_cpu(pid) for pid in pids), time.process_time())
    calls = max(result.operations, 1)
    emulator, service, caller = (1000 * (after - before) / calls
                                 for before, after in zip(cpu_before, cpu_after, strict=True))
    median_ms = statistics.median(result.latencies_ms) if result.operations else float("nan")
    return Run(result.per_second, median_ms, (emulator, service, caller))


def _process_cpu(pid: int) -> float:
    """CPU seconds used so far by another process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _report(rows: list[Row]) -> None:
    print(f"KMS signing, {LATENCY_SECONDS * 1000:.0f} ms added per Sign, median of {ROUNDS} "
          f"alternating {SECONDS_PER_RUN:g} s runs, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| callers | raw boto3 Sign/s | service SignTransaction/s | ratio "
          "| p50 ms raw / service | CPU ms per call raw / service |")
    print("|--:|--:|--:|--:|--:|--:|")
    for callers, raw, service in rows:
        print(f"| {callers} | {raw.rate:.1f} | {service.rate:.1f} | {service.rate / raw.rate:.0%} "
              f"| {raw.p50_ms:.1f} / {service.p50_ms:.1f} "
              f"| {sum(raw.cpu_ms):.1f} / {sum(service.cpu_ms):.1f} |")
    print(f"Serialized KMS calls would cap at {1 / LATENCY_SECONDS:.0f}/s. CPU per call = "
          "emulator + service process + calling process; once rate x CPU per call reaches the "
          "machine's cores, throughput is CPU-bound rather than KMS-bound.")


def _boto3_client(endpoint_url: str) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "total_max_attempts": 3},
                    max_pool_connections=64, connect_timeout=2, read_timeout=5)
    return boto3.session.Session().client("kms", region_name=REGION, endpoint_url=endpoint_url,
                                          config=config)


def _start_service(endpoint_url: str, key_id: str) -> tuple[subprocess.Popen[str], str]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-kms-"))
    config = workdir / "signer.toml"
    config.write_text(
        '[server]\nlisten = "127.0.0.1:0"\nmax_workers = 32\n'
        f'[keys.bench]\nbackend = "kms"\nkms_key_id = "{key_id}"\nregion = "{REGION}"\n'
        f'endpoint_url = "{endpoint_url}"\n', encoding="utf-8")
    served = start_serve(workdir, config, {})
    return served.proc, served.target


if __name__ == "__main__":
    main()
