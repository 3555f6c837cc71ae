"""Budget reservations on every store: atomic under concurrency, sliding windows, release and
settle, exact 256-bit arithmetic."""

import threading

import pytest

from signer.store import BudgetClaim, BudgetExceeded, Store

ETH = 10**18
DAY = 86400


def eth(amount: int) -> BudgetClaim:
    return BudgetClaim("trader/eth_daily", amount, 2 * ETH, DAY)


def test_reservations_fill_the_window_and_refuse_the_excess(store: Store):
    uses = store.reserve("r1", [eth(ETH // 2), BudgetClaim("trader/signatures", 1, 3, 3600)], 1000.0)
    assert [(u.scope, u.spent, u.limit) for u in uses] == [
        ("trader/eth_daily", ETH // 2, 2 * ETH), ("trader/signatures", 1, 3)]
    store.reserve("r2", [eth(ETH)], 1001.0)
    with pytest.raises(BudgetExceeded) as caught:
        store.reserve("r3", [eth(ETH), BudgetClaim("trader/signatures", 1, 3, 3600)], 1002.0)
    assert caught.value.use.spent == ETH + ETH // 2 and caught.value.amount == ETH
    # nothing of the refused request was reserved, in any budget
    assert store.budget_spent("trader/signatures", 3600, 1003.0) == 1
    store.reserve("r4", [eth(ETH // 2)], 1003.0)  # exactly the limit is allowed
    assert store.budget_spent("trader/eth_daily", DAY, 1004.0) == 2 * ETH


def test_the_window_slides(store: Store):
    store.reserve("r1", [eth(2 * ETH)], 1000.0)
    with pytest.raises(BudgetExceeded):
        store.reserve("r2", [eth(1)], 1000.0 + DAY - 1)
    store.reserve("r3", [eth(ETH)], 1000.0 + DAY + 1)
    assert store.budget_spent("trader/eth_daily", DAY, 1000.0 + DAY + 2) == ETH


def test_release_gives_back_and_settle_keeps(store: Store):
    store.reserve("signed", [eth(ETH)], 10.0)
    store.reserve("failed", [eth(ETH)], 11.0)
    store.settle("signed")
    store.release("failed")
    assert store.budget_spent("trader/eth_daily", DAY, 12.0) == ETH


def test_amounts_beyond_64_bits_are_exact(store: Store):
    huge = 2**255 + 12345
    claim = BudgetClaim("t/usdc", huge, 2**256 - 1, DAY)
    store.reserve("a", [claim], 1.0)
    store.reserve("b", [BudgetClaim("t/usdc", 2**255 - 12346, 2**256 - 1, DAY)], 2.0)
    assert store.budget_spent("t/usdc", DAY, 3.0) == 2**256 - 1
    with pytest.raises(BudgetExceeded):
        store.reserve("c", [BudgetClaim("t/usdc", 1, 2**256 - 1, DAY)], 4.0)


def test_concurrent_reservations_never_overspend(store: Store):
    granted: list[str] = []
    lock = threading.Lock()

    def spend(n: int) -> None:
        try:
            store.reserve(f"r{n}", [eth(ETH // 10)], 100.0)
        except BudgetExceeded:
            return
        with lock:
            granted.append(f"r{n}")

    threads = [threading.Thread(target=spend, args=(n,)) for n in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(granted) == 20
    assert store.budget_spent("trader/eth_daily", DAY, 101.0) == 2 * ETH


def test_the_running_total_follows_expiry_release_and_a_changed_window(store: Store):
    store.reserve("a", [eth(ETH)], 0.0)
    store.reserve("b", [eth(ETH // 2)], 100.0)
    assert store.budget_spent("trader/eth_daily", DAY, 200.0) == ETH + ETH // 2
    assert store.budget_spent("trader/eth_daily", DAY, DAY + 50.0) == ETH // 2  # a left
    store.release("b")
    assert store.budget_spent("trader/eth_daily", DAY, DAY + 60.0) == 0
    store.release("b")  # twice: nothing more to give back
    assert store.budget_spent("trader/eth_daily", DAY, DAY + 61.0) == 0
    # an operator widens the window: the total is summed again from the kept rows
    assert store.budget_spent("trader/eth_daily", 2 * DAY, DAY + 70.0) == ETH
    store.reserve("c", [BudgetClaim("trader/eth_daily", ETH, 2 * ETH, 2 * DAY)], DAY + 80.0)
    with pytest.raises(BudgetExceeded) as caught:
        store.reserve("d", [BudgetClaim("trader/eth_daily", 1, 2 * ETH, 2 * DAY)], DAY + 90.0)
    assert caught.value.use.spent == 2 * ETH
