"""Request and audit-event ids: 32 hex digits (128 random bits), like a uuid4's hex.

They correlate log lines and audit records; they are not secrets and guard nothing, so they
come from `random` (Mersenne Twister, seeded from os.urandom at start-up and re-seeded in a
forked child) rather than from os.urandom itself: uuid4 makes a system call per id, which drops
and retakes the GIL on every request (about 5% of a signing call's samples at 16 callers).
"""

import random


def new_id() -> str:
    return f"{random.getrandbits(128):032x}"


MAX_REQUEST_ID = 64


def request_id_from(value: str | None) -> str:
    """The caller's x-request-id, cut to 64 characters, if it is printable ASCII; else a new
    id. Only ASCII: an HTTP/2 client may send other bytes, which grpc core then refuses to
    echo in the trailer, after the request was served (the caller would get nothing)."""
    if value and value.isascii() and value.isprintable():
        return value[:MAX_REQUEST_ID]
    return new_id()
