"""Thread pools whose threads all exist from the start.

A ThreadPoolExecutor starts a thread only when work arrives and none is idle, so over hours its
size creeps up to max_workers, one new thread at each new concurrency high. Started whole, a
pool's thread count is fixed from start-up: what an operator sizes and watches
(`ps -T`, `/proc/PID/status`) is the number the configuration gives, and any growth is a leak
(the soak test checks exactly that).
"""

import threading
from concurrent.futures import ThreadPoolExecutor

START_TIMEOUT = 10.0


def start_all(pool: ThreadPoolExecutor, size: int) -> ThreadPoolExecutor:
    """Make the pool start `size` threads now (`size`: its max_workers). Each is held at a
    barrier until all exist, so none is idle while the next is asked for and the pool must
    start a new one each time (the executor reuses an idle thread before starting another)."""
    gate = threading.Barrier(size + 1, timeout=START_TIMEOUT)
    for _ in range(size):
        pool.submit(gate.wait)
    gate.wait()
    return pool
