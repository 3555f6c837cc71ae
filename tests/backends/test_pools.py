"""Pools started whole: every thread exists on return, and later work starts none."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from signer.pools import start_all


def _ours(prefix: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(prefix))


def test_every_thread_exists_at_once_and_work_adds_none() -> None:
    pool = start_all(ThreadPoolExecutor(6, thread_name_prefix="start-all-test"), 6)
    try:
        assert _ours("start-all-test") == 6
        gate = threading.Barrier(7, timeout=10)  # six concurrent tasks: the whole pool busy
        futures = [pool.submit(gate.wait) for _ in range(6)]
        gate.wait()
        for future in futures:
            future.result(10)
        for _ in range(50):
            pool.submit(time.sleep, 0.001).result(10)
        assert _ours("start-all-test") == 6
    finally:
        pool.shutdown(wait=True)
    assert _ours("start-all-test") == 0


def test_a_lazy_pool_grows_where_a_started_one_does_not() -> None:
    """The reference: without start_all the same pool begins with no thread."""
    pool = ThreadPoolExecutor(6, thread_name_prefix="lazy-pool-test")
    try:
        assert _ours("lazy-pool-test") == 0
        pool.submit(lambda: None).result(10)
        assert _ours("lazy-pool-test") == 1
    finally:
        pool.shutdown(wait=True)
