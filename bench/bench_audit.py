"""The audit log at scale: does a store with millions of records sign as fast as an empty one,
how fast does `audit verify` stream and in how much memory, and how fast does `audit tail`
answer?

`python -m bench audit` (BENCH_AUDIT_RECORDS, default 1,000,000; the issue's aim is stated at
10,000,000): fills a SQLite store with the real writer (`AuditLog.write`, intent/outcome pairs
as the application path writes them, 5,000 records a commit), then measures
- the in-process signing path (audited, 16 threads) on an empty store and on the full one,
- `verify` over the whole log, in a child process (records/s, its peak RSS),
- `verify` resumed from the heads of the first run after 1,000 more records,
- `tail_audit(20)` (what `wallet-signer audit tail` runs, without the process start-up),
- `export` + `prune` of the oldest half, and `verify` from the checkpoint after it.
The store lives in a temporary directory and is deleted at the end (never a fixture).
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import closed_loop

RECORDS = int(os.environ.get("BENCH_AUDIT_RECORDS", "1000000"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "2"))
KEY = "0x" + "46" * 32
COMMIT = 5000

_VERIFY = """
import json, sys, time
from signer.app.audit import verify
from signer.store import open_store
store = open_store(sys.argv[1])
resume = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
began, cpu = time.perf_counter(), time.process_time()
report = verify(store, {w: tuple(h) for w, h in resume.items()} if resume else None)
elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across execve, so it would report the bench
# process this child was forked from whenever that was larger
hwm = next(int(line.split()[1]) for line in open("/proc/self/status")
           if line.startswith("VmHWM:"))
print(json.dumps({"ok": report.ok, "problem": report.problem, "records": report.records,
                  "seconds": elapsed, "cpu": cpu, "max_rss_mb": hwm / 1024,
                  "heads": report.heads}))
"""


def _verify(url: str, resume: dict[str, Any] | None = None) -> dict[str, Any]:
    argv = [sys.executable, "-c", _VERIFY, url] + ([json.dumps(resume)] if resume else [])
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=3600)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def main() -> None:
    from signer.admin.archive import export, prune
    from signer.admin.state import TailRecord
    from signer.app.access import AccessControl
    from signer.app.application import Application
    from signer.app.audit import AuditLog
    from signer.app.caller import Caller
    from signer.app.records import Signing, parse
    from signer.backends.env import EnvBackend, parse_private_key
    from signer.service import KeyRing
    from signer.store import open_store
    from signer.wallet import WalletSigner

    signer = WalletSigner("bench", EnvBackend(parse_private_key(KEY, "bench key")))
    keyring = KeyRing([signer])

    def sign_rate(url: str) -> tuple[float, float]:
        store = open_store(url)
        app = Application(keyring, store, access=AccessControl({}))
        app.audit.start()

        def call(caller: int, n: int) -> None:
            who = Caller("ipv4:127.0.0.1:1", f"bench-{caller}-{n}")
            with app.signing(who, "SignMessage", "bench") as request:
                request.sign_message(f"{caller}-{n}".encode(), 10)

        for n in range(20):
            call(0, 10**6 + n)
        before = _cpu()
        result = closed_loop("path", 16, SECONDS, call)
        cpu = 1e6 * (_cpu() - before) / max(result.operations, 1)
        store.close()
        return result.per_second, cpu

    def records(n: int, base: int) -> list[Signing]:
        out = []
        for i in range(base, base + n // 2):
            common = dict(event=f"{i:032x}", request_id=f"{i:032x}",
                          peer="ipv4:10.1.2.3:50000", method="SignTransaction", key_id="hot",
                          client="trader", identity="CN=trader", policy="trader",
                          rule_id="swap", digest="0x" + f"{i:064x}",
                          transaction={"type": 2, "chain_id": 1, "nonce": i,
                                       "to": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
                                       "value": "1000", "data_bytes": 68,
                                       "data_keccak": "0x" + f"{i:064x}"})
            out.append(Signing(kind="intent", **common))  # type: ignore[arg-type]
            out.append(Signing(kind="outcome", decision="allow", status="OK", reason="",
                               result="0x" + f"{i:064x}", **common))  # type: ignore[arg-type]
        return out

    with tempfile.TemporaryDirectory(prefix="ws-audit-scale-") as workdir:
        empty_url = f"sqlite://{Path(workdir) / 'empty.db'}"
        full_url = f"sqlite://{Path(workdir) / 'full.db'}"
        for url in (empty_url, full_url):
            store = open_store(url)
            store.migrate()
            store.close()

        print(f"\n## audit at scale: SQLite, {RECORDS:,} records (written by AuditLog, "
              f"{COMMIT} a commit); {SECONDS:g} s signing points, 16 threads")
        store = open_store(full_url)
        log = AuditLog(store)
        began, cpu0 = time.perf_counter(), _cpu()
        for base in range(0, RECORDS, COMMIT):
            log.write(records(min(COMMIT, RECORDS - base), base))
        fill = time.perf_counter() - began
        fill_cpu = _cpu() - cpu0
        size = sum(p.stat().st_size for p in Path(workdir).glob("full.db*"))
        print(f"- fill: {RECORDS / fill:,.0f} records/s ({1e6 * fill_cpu / RECORDS:.1f} µs "
              f"CPU a record: build, encode, hash, insert); store {size / 2**30:.2f} GiB")
        store.close()

        # alternated, best of three each: the machine is shared, single runs are noisy
        runs: dict[str, list[tuple[float, float]]] = {"empty": [], "full": []}
        for _ in range(3):
            runs["empty"].append(sign_rate(empty_url))
            runs["full"].append(sign_rate(full_url))
        (empty_rate, empty_cpu), (full_rate, full_cpu) = (max(runs["empty"]), max(runs["full"]))
        print(f"- signing, empty store: {empty_rate:,.0f}/s, {empty_cpu:.0f} µs CPU a call "
              f"(runs: {', '.join(f'{r:,.0f}' for r, _ in runs['empty'])})")
        print(f"- signing, full store: {full_rate:,.0f}/s, {full_cpu:.0f} µs CPU a call "
              f"({full_rate / empty_rate:.0%} of empty; runs: "
              f"{', '.join(f'{r:,.0f}' for r, _ in runs['full'])})")

        first = _verify(full_url)
        assert first["ok"], first["problem"]
        count, wall, cpu = int(first["records"]), float(first["seconds"]), float(first["cpu"])
        print(f"- verify, whole log: {count:,} records in {wall:.1f} s wall = {count / wall:,.0f} "
              f"records/s; {cpu:.1f} s CPU = {count / cpu:,.0f} records per CPU-second "
              f"(peak RSS of the verifying process {first['max_rss_mb']:.0f} MB)")
        store = open_store(full_url)
        AuditLog(store).write(records(1000, 10**9))
        store.close()
        resumed = _verify(full_url, first["heads"])
        assert resumed["ok"], resumed["problem"]
        print(f"- verify --resume after 1,000 more: {resumed['records']:,} records in "
              f"{resumed['seconds'] * 1000:.0f} ms")

        store = open_store(full_url)
        timings = []
        for _ in range(20):
            began = time.perf_counter()
            rows = store.recent_audit(20)
            _ = [TailRecord(r.writer, r.seq, parse(json.loads(r.body))) for r in rows]
            timings.append((time.perf_counter() - began) * 1000)
        timings.sort()
        print(f"- tail 20: median {timings[10]:.1f} ms, worst {timings[-1]:.1f} ms")

        heads = store.chain_heads()
        middle = store.audit_row(log.writer, RECORDS // 2)
        assert middle is not None and heads
        began = time.perf_counter()
        exported, _ = export(store, middle.at, Path(workdir) / "export.jsonl")
        export_s = time.perf_counter() - began
        began = time.perf_counter()
        prune(store, middle.at, Path(workdir) / "export.jsonl", "bench")
        prune_s = time.perf_counter() - began
        store.close()
        print(f"- export of the oldest half: {exported:,} records in {export_s:.1f} s; prune "
              f"{prune_s:.1f} s (checks the file and the store, deletes, checkpoint)")
        after = _verify(full_url)
        assert after["ok"], after["problem"]
        print(f"- verify after prune (from the checkpoint): {after['records']:,} records, "
              f"{after['seconds']:.1f} s")


if __name__ == "__main__":
    main()
