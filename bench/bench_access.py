"""Access and audit benchmark: what mTLS and the durable audit log cost per SignTransaction.

In the same run, three servers with the same env key, each driven over gRPC with 1, 4 and 16
callers from a separate process: (a) plaintext with the audit log switched off (a bench-only
stand-in: the service itself has no such mode), (b) mTLS + audit on SQLite (WAL,
synchronous=FULL), (c) mTLS + audit on PostgreSQL (a throwaway local cluster; skipped when
PostgreSQL cannot be started here). Printed as ratios to (a).
"""

import multiprocessing
import os
import statistics
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.common import Result, closed_loop

DURATION = float(os.environ.get("BENCH_SECONDS", "3"))
KEY = "0x" + "46" * 32
TX_TEMPLATE = {"type": 2, "chain_id": 1, "to": "0x" + "35" * 20, "value": "1",
               "gas_limit": 21000, "max_fee_per_gas": "30000000000",
               "max_priority_fee_per_gas": "1000000000"}
CALLERS = (1, 4, 16)


class NoAudit:
    """Bench only: an audit log that records nothing, for the baseline row."""

    writer = "none"

    def start(self) -> None:
        pass

    def write(self, bodies: Iterable[object], timeout: float | None = None) -> None:
        pass


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
        process.start()
        operations, seconds, latencies = out.get(timeout=DURATION + 120)
        process.join()
        rows.append(Result(label, callers, operations, seconds, latencies))
    return rows


def serve(store_url: str, tls_files: Any | None, audit: bool) -> Any:
    from signer.app.access import AccessControl
    from signer.app.application import Application
    from signer.backends.env import EnvBackend, parse_private_key
    from signer.config import ClientConfig, ServerConfig
    from signer.grpc.server import SignerServer
    from signer.service import KeyRing
    from signer.store import open_store
    from signer.wallet import WalletSigner

    keyring = KeyRing([WalletSigner("bench", EnvBackend(parse_private_key(KEY, "bench")))])
    store = open_store(store_url)
    store.migrate()
    clients = {}
    server_options: dict[str, Any] = {"listen": "127.0.0.1:0"}
    if tls_files is not None:
        clients = {"bench": ClientConfig(identity="spiffe://bench/caller", keys=["bench"])}
        server_options.update(tls_files)
    app = Application(
        keyring, store, access=AccessControl(clients),
        audit=None if audit else NoAudit(),  # type: ignore[arg-type]
    )
    app.audit.start()
    server = SignerServer(app, ServerConfig(**server_options))
    server.self_test_and_mark_ready()
    return server


def main() -> None:
    from signer.client import TlsFiles
    from tests.tls_certs import CertificateAuthority

    results: dict[str, list[Result]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        directory = Path(workdir)
        ca = CertificateAuthority(directory)
        server_cert = ca.server()
        client = ca.issue("caller", uris=("spiffe://bench/caller",))
        tls_files = {"tls_cert_file": server_cert.cert_file, "tls_key_file": server_cert.key_file,
                     "client_ca_file": ca.cert_file}
        client_tls = TlsFiles(ca.cert_pem, client.cert_pem, client.key_pem)
        setups: list[tuple[str, str, Any, Any, bool]] = [
            ("(a) plaintext, no audit", f"sqlite://{directory / 'a.db'}", None, None, False),
            ("(b) mTLS + audit, SQLite", f"sqlite://{directory / 'b.db'}", tls_files,
             client_tls, True),
        ]
        cluster = _postgres(directory)
        if cluster is not None:
            setups.append(("(c) mTLS + audit, PostgreSQL", cluster.create_database().url,
                           tls_files, client_tls, True))
        try:
            for label, url, server_tls, caller_tls, audit in setups:
                server = serve(url, server_tls, audit)
                try:
                    results[label] = measure(label, f"127.0.0.1:{server.port}", caller_tls)
                finally:
                    server.stop(0)
        finally:
            if cluster is not None:
                cluster.destroy()
    print_ratios(results)


def _postgres(directory: Path) -> Any:
    try:
        from tests.postgres_cluster import PostgresCluster, PostgresUnavailable
    except ImportError:
        print("# (c) skipped: no PostgreSQL helper")
        return None
    try:
        return PostgresCluster.create()
    except PostgresUnavailable as exc:
        print(f"# (c) skipped: {exc}")
        return None


def print_ratios(results: dict[str, list[Result]]) -> None:
    baseline = {r.callers: r for r in next(iter(results.values()))}
    print(f"\n## access and audit: SignTransaction, env key, {DURATION:g} s per point")
    print(f"{'setup':<30} {'callers':>7} {'tx/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'vs (a)':>7}")
    for rows in results.values():
        for row in rows:
            print(f"{row.label:<30} {row.callers:>7} {row.per_second:>7.0f} "
                  f"{statistics.median(row.latencies_ms):>7.2f} {row.percentile(0.99):>7.2f} "
                  f"{row.per_second / baseline[row.callers].per_second:>7.0%}")


if __name__ == "__main__":
    main()
