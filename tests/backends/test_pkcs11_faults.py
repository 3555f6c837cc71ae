"""Faults injected underneath a serving SoftHSM key while requests are in flight.

Every answer must be a correct signature or UNAVAILABLE (never a wrong signature, never
UNKNOWN/INTERNAL), the server keeps serving, and a token re-created with a different key under
the same label is refused with FAILED_PRECONDITION.
"""

import threading
import time
from collections import Counter

import grpc
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from signer.service import KeyRing
from signer.v1 import signer_pb2 as pb
from tests.support.fixtures_pkcs11 import (
    SECRET,
    generate_key,
    import_key,
    open_signer,
    recreate_token_in_other_process,
)


class Hammer:
    """Callers signing messages in a loop; every answer is checked and tallied."""

    def __init__(self, stub, address, callers=4):
        self.stub, self.address = stub, address
        self.stop = threading.Event()
        self.codes: Counter[str] = Counter()
        self.wrong: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(callers)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _run(self, n):
        i = 0
        while not self.stop.is_set() and i < 5000:
            i += 1
            message = f"{n}-{i}".encode()
            try:
                reply = self.stub.SignMessage(
                    pb.SignMessageRequest(key_id="hsm", message=message), timeout=10)
            except grpc.RpcError as exc:
                self.codes[exc.code().name] += 1
                continue
            signer = Account.recover_message(encode_defunct(message), signature=reply.signature)
            self.codes["OK"] += 1
            if signer != self.address:
                self.wrong.append(signer)

    def wait_for_ok(self, seconds=10.0):
        """Until a first signature came back (threads and channels are slow to start under
        load): faults injected before that would leave nothing to compare against."""
        deadline = time.monotonic() + seconds
        while self.codes["OK"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)

    def assert_clean(self, allowed=("OK", "UNAVAILABLE")):
        assert self.wrong == []
        assert set(self.codes) <= set(allowed), self.codes
        assert self.codes["OK"] > 0


def sign_once(server, message=b"after"):
    return server.stub.SignMessage(pb.SignMessageRequest(key_id="hsm", message=message),
                                   timeout=10)


def wait_until_ok(server, seconds=5.0):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return sign_once(server)
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def served(serve, softhsm_token):
    generate_key(softhsm_token, "k")
    signer = open_signer(softhsm_token, "k", pool_size=4)
    return serve(KeyRing([signer])), signer


def test_sessions_closed_underneath(served, caplog):
    server, signer = served
    backend = signer.backend
    raw = backend._connection.library.raw
    with Hammer(server.stub, signer.address) as hammer:
        for _ in range(40):
            # Take an idle session out of the pool, close it, put it back: the next caller
            # finds a dead handle. (Closing one while another thread is inside C_Sign on it is
            # a use-after-free inside SoftHSM itself, not a fault a token can produce.)
            slot = backend._pool.get(timeout=10)
            if slot is not None:
                raw.close_session(slot.session.handle)
            backend._pool.put(slot)
            time.sleep(0.01)
    hammer.assert_clean()
    assert hammer.codes["OK"] > 40
    assert "CKR_SESSION_HANDLE_INVALID; recovering" in caplog.text  # the faults were hit
    wait_until_ok(server)


def test_logged_out_underneath(served, softhsm_token, caplog):
    caplog.set_level("DEBUG")
    server, signer = served
    connection = signer.backend._connection
    raw = connection.library.raw
    with Hammer(server.stub, signer.address) as hammer:
        for _ in range(15):
            with connection.library.gate.shared():
                session = connection.open_session()
                raw.logout(session.handle)  # logs out every session of the process
                raw.close_session(session.handle)
            time.sleep(0.03)
    hammer.assert_clean()
    wait_until_ok(server)
    assert raw.is_logged_in(connection._anchor.handle)
    assert "recovering" in caplog.text  # the re-login path ran...
    assert softhsm_token.pin not in caplog.text  # ...and never logged the PIN


def test_token_recreated_with_same_key_recovers(serve, softhsm_token):
    import_key(softhsm_token, "k", SECRET)
    signer = open_signer(softhsm_token, "k")
    server = serve(KeyRing([signer]))
    with Hammer(server.stub, signer.address) as hammer:
        hammer.wait_for_ok()
        recreate_token_in_other_process(softhsm_token, "k", SECRET)
        time.sleep(0.3)
    hammer.assert_clean()
    assert hammer.codes["UNAVAILABLE"] > 0  # the window without a token was seen
    wait_until_ok(server)


def test_token_recreated_with_different_key_is_refused(serve, softhsm_token):
    import_key(softhsm_token, "k", SECRET)
    signer = open_signer(softhsm_token, "k")
    server = serve(KeyRing([signer]))
    other = bytes.fromhex("11" * 32)
    with Hammer(server.stub, signer.address) as hammer:
        hammer.wait_for_ok()
        recreate_token_in_other_process(softhsm_token, "k", other)
        time.sleep(0.5)
    hammer.assert_clean(allowed=("OK", "UNAVAILABLE", "FAILED_PRECONDITION"))
    for _ in range(3):
        try:
            sign_once(server)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                time.sleep(0.3)
                continue
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "not the key this service started with" in exc.details()
            break
    else:
        pytest.fail("a different key under the same label was never refused")
    # the server keeps serving, and keeps its address
    reply = server.stub.GetAddress(pb.GetAddressRequest(key_id="hsm"), timeout=5)
    assert reply.address == signer.address
