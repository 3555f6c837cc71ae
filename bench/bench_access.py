"""Access, audit and policy benchmark: what mTLS, the durable audit log and a signing policy
cost per SignTransaction.

In the same run, servers with the same env key, each driven over gRPC with 1, 4 and 16 callers
from a separate process: (a) plaintext with the audit log switched off (a bench-only stand-in:
the service itself has no such mode), (b) mTLS + audit on SQLite (WAL, synchronous=FULL),
(c) mTLS + audit on PostgreSQL (a throwaway local cluster; skipped when PostgreSQL cannot be
started here), then (d) and (e): (b) and (c) with a 20-rule policy whose matching rule spends
two budgets (the reservation, settle and audit all in the store). Printed as ratios to (a), and
the policy rows to the same store without a policy.
"""

import multiprocessing
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.common import NoAudit, Result, closed_loop, postgres_cluster

DURATION = float(os.environ.get("BENCH_SECONDS", "3"))
KEY = "0x" + "46" * 32
TX_TEMPLATE: dict[str, Any] = {"type": 2, "chain_id": 1, "to": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
               "value": "1",
               "gas_limit": 21000, "max_fee_per_gas": "30000000000",
               "max_priority_fee_per_gas": "1000000000"}
CALLERS = (1, 4, 16)


def _callers(target: str, tls: Any, callers: int, duration: float, out: Any) -> None:
    from signer.client import open_channel
    from signer.v1 import signer_pb2 as pb
    from signer.v1 import signer_pb2_grpc as pb_grpc

    stub = pb_grpc.SignerServiceStub(open_channel(target, tls))

    def sign(caller: int, n: int) -> None:
        tx = pb.Transaction(nonce=caller * 1_000_000 + n, **TX_TEMPLATE)
        stub.SignTransaction(pb.SignTransactionRequest(key_id="bench", transaction=tx), timeout=30)

    sign(0, 0)
    result = closed_loop("gRPC", callers, duration, sign)
    out.put((result.operations, result.seconds, result.latencies_ms))


def measure(label: str, target: str, tls: Any) -> list[Result]:
    context = multiprocessing.get_context("spawn")
    rows = []
    for callers in CALLERS:
        out = context.Queue()
        process = context.Process(target=_callers, args=(target, tls, callers, DURATION, out))
        # The server runs in this process, the callers in the child: this process's CPU over
        # the point is the server's (the child's start-up and warm-up call included).
        before = os.times()
        process.start()
        operations, seconds, latencies = out.get(timeout=DURATION + 120)
        after = os.times()
        process.join()
        cpu = (after.user + after.system) - (before.user + before.system)
        rows.append(Result(label, callers, operations, seconds, latencies,
                           1e6 * cpu / max(operations, 1)))
    return rows


def bench_policy() -> Any:
    """The 20-rule policy of `bench policy`, its budgets too large to run out in a bench."""
    from bench.bench_policy import twenty_rule_config
    from signer.policy import PolicyConfig

    config = twenty_rule_config()
    config["budgets"] = {name: {**budget, "limit": str(10**40)}
                         for name, budget in config["budgets"].items()}
    return PolicyConfig.model_validate(config)


def serve(store_url: str, tls_files: Any | None, audit: bool, policy: Any = None) -> Any:
    """A Runtime serving gRPC on an ephemeral port, SERVING (the caller closes it)."""
    from signer.app.access import AccessControl
    from signer.backends.env import EnvBackend, parse_private_key
    from signer.config import ClientConfig, Config, ServerConfig, StoreConfig
    from signer.runtime import Runtime
    from signer.service import KeyRing
    from signer.wallet import WalletSigner

    clients = {}
    server_options: dict[str, Any] = {"listen": "127.0.0.1:0"}
    if tls_files is not None:
        clients = {"bench": ClientConfig(identity="spiffe://bench/caller", keys=["bench"],
                                         policy="trader" if policy else None)}
        server_options.update(tls_files)
    runtime = Runtime(Config(server=ServerConfig(**server_options),
                             store=StoreConfig(url=store_url)))
    try:
        runtime.open_keyring(
            KeyRing([WalletSigner("bench", EnvBackend(parse_private_key(KEY, "bench")))]))
        runtime.open_application(
            access=AccessControl(clients, {"trader": policy} if policy else {}),
            audit=None if audit else NoAudit(),
        )
        runtime.start().grpc.self_test_and_mark_ready()
    except BaseException:
        runtime.close()
        raise
    return runtime


def main() -> None:
    from signer.client import TlsFiles
    from tests.support.tls_certs import CertificateAuthority

    results: dict[str, list[Result]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        directory = Path(workdir)
        ca = CertificateAuthority(directory)
        server_cert = ca.server()
        client = ca.issue("caller", uris=("spiffe://bench/caller",))
        tls_files = {"tls_cert_file": server_cert.cert_file, "tls_key_file": server_cert.key_file,
                     "client_ca_file": ca.cert_file}
        client_tls = TlsFiles(ca.cert_pem, client.cert_pem, client.key_pem)
        policy = bench_policy()
        setups: list[tuple[str, str, Any, Any, bool, Any]] = [
            ("(a) plaintext, no audit", f"sqlite://{directory / 'a.db'}", None, None, False,
             None),
            ("(b) mTLS + audit, SQLite", f"sqlite://{directory / 'b.db'}", tls_files,
             client_tls, True, None),
            ("(d) (b) + 20-rule policy", f"sqlite://{directory / 'd.db'}", tls_files,
             client_tls, True, policy),
        ]
        cluster = postgres_cluster("(c) and (e)")
        if cluster is not None:
            setups.append(("(c) mTLS + audit, PostgreSQL", cluster.create_database().url,
                           tls_files, client_tls, True, None))
            setups.append(("(e) (c) + 20-rule policy", cluster.create_database().url,
                           tls_files, client_tls, True, policy))
        try:
            for label, url, server_tls, caller_tls, audit, with_policy in setups:
                with serve(url, server_tls, audit, with_policy) as runtime:
                    results[label] = measure(label, f"127.0.0.1:{runtime.grpc.port}",
                                             caller_tls)
        finally:
            if cluster is not None:
                cluster.destroy()
    print_ratios(results)


def print_ratios(results: dict[str, list[Result]]) -> None:
    by_label = {label[:3]: {r.callers: r for r in rows} for label, rows in results.items()}
    baseline = by_label["(a)"]
    without_policy = {"(d)": "(b)", "(e)": "(c)"}
    print(f"\n## access, audit and policy: SignTransaction, env key, {DURATION:g} s per point")
    print("(server CPU: the serving process's user + system time per call; PostgreSQL's own "
          "server processes are not in it)")
    print(f"{'setup':<30} {'callers':>7} {'tx/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'server CPU µs/call':>18} {'vs (a)':>7} {'vs same store, no policy':>25}")
    for label, rows in results.items():
        for row in rows:
            line = (f"{row.label:<30} {row.callers:>7} {row.per_second:>7.0f} "
                    f"{statistics.median(row.latencies_ms):>7.2f} {row.percentile(0.99):>7.2f} "
                    f"{row.cpu_us_per_call or 0:>18.0f} "
                    f"{row.per_second / baseline[row.callers].per_second:>7.0%}")
            reference = by_label.get(without_policy.get(label[:3], ""), {}).get(row.callers)
            if reference is not None:
                line += f" {row.per_second / reference.per_second:>25.0%}"
            print(line)


if __name__ == "__main__":
    main()
