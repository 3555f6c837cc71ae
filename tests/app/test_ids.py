"""Request and audit-event ids: 32 lowercase hex digits, distinct, and a forked child does not
repeat its parent's sequence (random re-seeds at fork; two replicas started by one supervisor
must not share ids)."""

import os
import re

from signer.ids import new_id


def test_ids_are_32_hex_digits_and_distinct() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_child_draws_other_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write its next ids and leave at once
        os.write(write, " ".join(new_id() for _ in range(4)).encode())
        os._exit(0)
    os.close(write)
    ours = {new_id() for _ in range(4)}
    with os.fdopen(read) as pipe:
        theirs = set(pipe.read().split())
    os.waitpid(pid, 0)
    assert len(theirs) == 4 and not ours & theirs
