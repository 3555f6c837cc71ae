"""Where a signature's CPU goes, without any transport: the application path in-process.

`python -m bench path`: one env key, `Application.signing(...)` + `sign_transaction` called
directly by 1 and 16 threads (what a door does once it has parsed a request), against
(a) the same key's `WalletSigner.sign_transaction` alone, (b) the application path with the
audit log off (access, freeze and records built, nothing written; bench-only stand-in), and
(c) the application path as served: durable audit on SQLite (two commits a signature, one of
them flushed, shared between concurrent requests), and (d) the same on PostgreSQL (a throwaway
local cluster, fsync on; skipped when PostgreSQL cannot be run here). Per point: calls/s and
the process's CPU (user + system) per call (for (d) the PostgreSQL server's CPU is not in it);
set beside the `transport` suite's server CPU per call, the difference is what gRPC costs.
"""

import os
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from bench.common import NoAudit, Result, closed_loop, postgres_cluster

SECONDS = float(os.environ.get("BENCH_SECONDS", "2"))
KEY = "0x" + "46" * 32
THREADS = (1, 16)


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def _measure(label: str, threads: int, call: Callable[[int, int], object]) -> tuple[Result, float]:
    for n in range(20):  # warm: first records, caches
        call(0, 10**6 + n)
    before = _cpu()
    result = closed_loop(label, threads, SECONDS, call)
    return result, 1e6 * (_cpu() - before) / max(result.operations, 1)


def main() -> None:
    from signer.app.access import AccessControl
    from signer.app.application import Application
    from signer.app.caller import Caller
    from signer.backends.env import EnvBackend, parse_private_key
    from signer.config import Config, StoreConfig
    from signer.eth.transactions import UnsignedTransaction
    from signer.runtime import Runtime
    from signer.service import KeyRing
    from signer.wallet import WalletSigner

    signer = WalletSigner("bench", EnvBackend(parse_private_key(KEY, "bench key")))
    keyring = KeyRing([signer])

    def tx(caller: int, n: int) -> UnsignedTransaction:
        return UnsignedTransaction(
            type=2, chain_id=1, nonce=caller * 10_000_000 + n, to=b"\x35" * 20, value=1,
            gas_limit=21000, max_fee_per_gas=30 * 10**9, max_priority_fee_per_gas=10**9)

    def through(app: Application) -> Callable[[int, int], object]:
        def call(caller: int, n: int) -> None:
            who = Caller("ipv4:127.0.0.1:1", f"bench-{caller}-{n}")
            with app.signing(who, "SignTransaction", "bench") as request:
                request.sign_transaction(tx(caller, n), 10)
        return call

    with tempfile.TemporaryDirectory() as workdir, ExitStack() as runtimes:
        variants: list[tuple[str, Callable[[int, int], object]]] = [
            ("(a) WalletSigner.sign_transaction", lambda c, n: signer.sign_transaction(tx(c, n))),
        ]
        stores: list[tuple[str, str, NoAudit | None]] = [
            ("(b) application path, audit off", f"sqlite://{Path(workdir) / 'b.db'}", NoAudit()),
            ("(c) application path, audit on SQLite", f"sqlite://{Path(workdir) / 'c.db'}", None),
        ]
        cluster = postgres_cluster("(d)")
        if cluster is not None:
            runtimes.callback(cluster.destroy)
            stores.append(("(d) application path, audit on PostgreSQL",
                           cluster.create_database().url, None))
        for name, url, audit in stores:
            runtime = runtimes.enter_context(Runtime(Config(store=StoreConfig(url=url))))
            runtime.open_keyring(keyring)
            app = runtime.open_application(access=AccessControl({}), audit=audit)
            variants.append((name, through(app)))
        print(f"\n## path: the application path in-process, env key, {SECONDS:g} s a point")
        print("| what | threads | calls/s | p50 ms | CPU µs/call |\n|---|--:|--:|--:|--:|")
        for threads in THREADS:
            for label, call in variants:
                result, cpu = _measure(label, threads, call)
                print(f"| {label} | {threads} | {result.per_second:.0f} "
                      f"| {result.percentile(0.5):.2f} | {cpu:.0f} |", flush=True)
                time.sleep(0.2)


if __name__ == "__main__":
    main()
