"""The nonce counter of the JSON-RPC door on every store: concurrent reservations never repeat,
the node's pending count is a floor, and only the last nonce handed out can be given back."""

import threading

from signer.store import Store, open_store

ALICE, BOB = b"\xaa" * 20, b"\xbb" * 20


def test_first_reservation_starts_at_the_floor_then_counts_up(store: Store):
    assert [store.next_nonce(1, ALICE, 7) for _ in range(3)] == [7, 8, 9]
    assert store.next_nonce(1, ALICE, 0) == 10  # a stale floor does not go back
    assert store.next_nonce(1, ALICE, 20) == 20  # the node saw more: jump forward
    assert store.next_nonce(2, ALICE, 0) == 0  # per chain
    assert store.next_nonce(1, BOB, 0) == 0  # per address


def test_concurrent_reservations_are_distinct_and_consecutive(store: Store, tmp_path):
    # a second Store object on the same database: another replica
    other = open_store(store.url) if store.kind == "sqlite" else store
    got: list[int] = []
    lock = threading.Lock()

    def reserve(s: Store) -> None:
        for _ in range(25):
            n = s.next_nonce(1, ALICE, 3)
            with lock:
                got.append(n)

    threads = [threading.Thread(target=reserve, args=(store if i % 2 else other,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(got) == list(range(3, 3 + 200))


def test_release_gives_back_only_the_last_nonce(store: Store):
    a = store.next_nonce(1, ALICE, 0)
    assert store.release_nonce(1, ALICE, a)
    assert store.next_nonce(1, ALICE, 0) == a  # reused: no gap
    b = store.next_nonce(1, ALICE, 0)
    assert not store.release_nonce(1, ALICE, a)  # b was handed out after a
    assert store.next_nonce(1, ALICE, 0) == b + 1
    assert not store.release_nonce(1, BOB, 0)  # nothing reserved for bob
