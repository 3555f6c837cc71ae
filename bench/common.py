"""Measuring helpers shared by the benchmarks: closed-loop callers, a latency summary, and the
no-audit stand-in of the baseline rows."""

import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from signer.store import AuditRow, BudgetUse

if TYPE_CHECKING:
    from signer.app.audit import Record, Reservation
    from signer.store.sql import Batch


@dataclass(frozen=True)
class Result:
    label: str
    callers: int
    operations: int
    seconds: float
    latencies_ms: list[float]
    cpu_us_per_call: float | None = None  # the serving process's, where the bench measured it

    @property
    def per_second(self) -> float:
        return self.operations / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def closed_loop(
    label: str, callers: int, seconds: float, call: Callable[[int, int], object]
) -> Result:
    """`callers` threads each call `call(caller, n)` back to back for `seconds` (n counts that
    caller's calls); every call is timed."""
    latencies: list[list[float]] = [[] for _ in range(callers)]
    start_gate = threading.Barrier(callers + 1)
    stop_at = [0.0]

    def worker(index: int) -> None:
        mine = latencies[index]
        start_gate.wait()
        n = 0
        while True:
            begun = time.perf_counter()
            if begun >= stop_at[0]:
                return
            call(index, n)
            mine.append((time.perf_counter() - begun) * 1000)
            n += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(callers)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    start_gate.wait()
    for thread in threads:
        thread.join(seconds + 60)
    elapsed = time.perf_counter() - began
    flat = [x for per in latencies for x in per]
    return Result(label, callers, len(flat), elapsed, flat)


def print_table(title: str, rows: list[Result], baseline: Result | None) -> None:
    print(f"\n## {title}")
    header = f"{'what':<44} {'callers':>7} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
    print(header + (f" {'vs ' + baseline.label:>24}" if baseline else ""))
    for row in rows:
        line = (f"{row.label:<44} {row.callers:>7} {row.per_second:>9.0f} "
                f"{statistics.median(row.latencies_ms):>8.2f} {row.percentile(0.99):>8.2f}")
        if baseline:
            line += f" {row.per_second / baseline.per_second:>23.0%}"
        print(line)


class NoAudit:
    """Bench only: an audit sink (signer.app.sinks.AuditSink) that records nothing, for the
    baseline rows; the service itself has no such mode."""

    writer = "none"

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def write(
        self,
        bodies: "Iterable[Record]",
        timeout: float | None = None,
        *,
        reserve: "Reservation | None" = None,
        settle: str | None = None,
        release: str | None = None,
        durable: bool = True,
        also: "Callable[[Batch, list[AuditRow]], None] | None" = None,
    ) -> list[BudgetUse]:
        return []


def postgres_cluster(rows: str) -> Any:
    """A throwaway local PostgreSQL cluster (tests/support/postgres_cluster.py), or None with a
    line saying which rows are skipped and why."""
    try:
        from tests.support.postgres_cluster import PostgresCluster, PostgresUnavailable
    except ImportError:
        print(f"# {rows} skipped: no PostgreSQL helper")
        return None
    try:
        return PostgresCluster.create()
    except PostgresUnavailable as exc:
        print(f"# {rows} skipped: {exc}")
        return None
