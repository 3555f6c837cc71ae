"""SignTransactions: one stream, every request answered in order with its own status.

Each streamed request must be answered exactly as unary SignTransaction answers it (same bytes,
same status, same message), an error must not end the stream, and a stream must not make the
server read (buffer) ahead of what it has answered.
"""

import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from signer.admin.state import freeze_key
from signer.app.audit import verify
from signer.service import KeyRing
from signer.v1 import signer_pb2 as pb
from tests.conftest import RunningServer, env_wallet, open_app
from tests.support.audit import by_request, state_config
from tests.support.bad_requests import CASES, GOOD, tx
from tests.support.faulty import faulty_signer


def _unary(server: RunningServer, request: pb.SignTransactionRequest) -> pb.SignTransactionsResponse:
    """What unary SignTransaction answers, in the stream's response shape (index 0)."""
    try:
        return pb.SignTransactionsResponse(signed=server.stub.SignTransaction(request, timeout=10))
    except grpc.RpcError as error:
        return pb.SignTransactionsResponse(
            error=pb.Status(code=error.code().value[0], message=error.details()))


def test_mixed_stream_is_answered_in_order_like_unary(env_server: RunningServer, caplog):
    caplog.set_level("INFO", logger="signer.access")
    bad = [case[0] for case in CASES]
    requests = [r for pair in zip(bad, GOOD * len(bad), strict=False) for r in pair]
    call = env_server.stub.SignTransactions(
        iter(requests), metadata=(("x-request-id", "batch-7"),), timeout=60)
    replies = list(call)
    assert [r.index for r in replies] == list(range(len(requests)))
    for request, reply in zip(requests, replies, strict=True):
        expected = _unary(env_server, request)
        expected.index = reply.index
        assert reply == expected  # env keys sign deterministically: byte-identical
    for (_, status, fragment), reply in zip(CASES, replies[::2], strict=True):
        assert (reply.error.code, fragment in reply.error.message) == (status.value[0], True)
    assert all(reply.HasField("signed") for reply in replies[1::2])
    assert call.code() == grpc.StatusCode.OK
    assert ("x-request-id", "batch-7") in call.trailing_metadata()
    line = next(m for m in caplog.messages if "request_id=batch-7" in m)
    assert "status=OK ms=" in line and f"messages={len(requests)}" in line
    assert f"OK:{len(bad)}" in line and "INVALID_ARGUMENT:" in line and "NOT_FOUND:1" in line
    assert "UNKNOWN" not in caplog.text and "INTERNAL" not in caplog.text


def test_undecodable_message_is_refused_and_the_stream_goes_on(env_server: RunningServer):
    call = env_server.channel.stream_stream(
        "/signer.v1.SignerService/SignTransactions",
        response_deserializer=pb.SignTransactionsResponse.FromString)
    good = GOOD[0].SerializeToString()
    replies = list(call(iter([good, b"\x12\x05\xff\xfe\xfd\xfc\xfb", good]), timeout=10))
    assert [r.index for r in replies] == [0, 1, 2]
    assert replies[1].error == pb.Status(
        code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
        message="request is not a valid SignTransaction request message")
    assert replies[0].signed == replies[2].signed == _unary(env_server, GOOD[0]).signed


def test_empty_stream_ends_ok(env_server: RunningServer):
    call = env_server.stub.SignTransactions(iter([]), timeout=10)
    assert list(call) == [] and call.code() == grpc.StatusCode.OK


def test_backend_fault_is_per_message_and_never_unknown(serve, env_key, caplog):
    """A bug in a backend (any exception) answers that message UNAVAILABLE; the next is signed."""
    calls = [0]

    def every_second_call_breaks(digest: bytes) -> None:
        calls[0] += 1
        if calls[0] > 1 and calls[0] % 2 == 0:  # the first call is the start-up self-test
            raise RuntimeError("boom")

    running = serve(KeyRing([faulty_signer(env_key, every_second_call_breaks)]))
    replies = list(running.stub.SignTransactions(iter(GOOD[:4]), timeout=10))
    codes = [r.error.code if r.HasField("error") else 0 for r in replies]
    assert codes == [grpc.StatusCode.UNAVAILABLE.value[0], 0] * 2
    assert replies[0].error.message == "signer fault: nothing was signed; retry later"
    assert "boom" in caplog.text  # logged with its trace, not sent


def test_a_stream_is_read_lazily_not_buffered(serve, env_key):
    """While the server is busy with one message, it does not read the stream ahead: the
    client's generator is drained only as far as the HTTP/2 flow-control window (64 KiB: the
    server turns off grpc's BDP window growth, which would let it reach 4 MiB and more a
    stream) plus socket buffers, however many messages the caller has ready."""
    release = threading.Event()
    signing = threading.Event()
    calls = [0]

    def hold(digest: bytes) -> None:
        calls[0] += 1
        if calls[0] > 1:  # the first call is the start-up self-test
            signing.set()
            release.wait(30)

    running = serve(KeyRing([faulty_signer(env_key, hold)]))
    pulled = [0]
    request = tx(data=b"\x01" * 1000)  # ~1.1 kB a message

    def endless() -> Iterator[pb.SignTransactionRequest]:
        while True:
            pulled[0] += 1
            yield request

    call = running.stub.SignTransactions(endless(), timeout=30)
    try:
        assert signing.wait(10)
        time.sleep(1.0)  # give an eager server every chance to read ahead
        held = pulled[0]
        assert held < 256, f"the client pushed {held} messages ({held} kB) into a busy stream"
        time.sleep(0.5)
        assert pulled[0] - held < 64  # and it stays there: no unbounded buffering
    finally:
        call.cancel()
        release.set()


def test_cancelled_stream_is_logged_and_the_server_serves_on(env_server: RunningServer, caplog):
    caplog.set_level("INFO", logger="signer.access")
    stop = threading.Event()

    def slow() -> Iterator[pb.SignTransactionRequest]:
        yield GOOD[0]
        stop.wait(10)

    call = env_server.stub.SignTransactions(slow(), metadata=(("x-request-id", "cx"),), timeout=10)
    assert next(call).HasField("signed")
    call.cancel()
    stop.set()
    deadline = time.monotonic() + 10
    while "request_id=cx" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(m for m in caplog.messages if "request_id=cx" in m)
    # as with deadlines, grpc may end the request iterator just before it marks the cancel
    assert "status=CANCELLED" in line or "status=OK" in line, line
    assert "unexpected fault" not in caplog.text
    assert env_server.stub.SignTransaction(GOOD[1], timeout=10).raw_transaction


@pytest.mark.parametrize("seconds", [0.3])
def test_deadline_ends_a_stream_with_deadline_exceeded(env_server: RunningServer, seconds, caplog):
    caplog.set_level("INFO", logger="signer.access")
    stop = threading.Event()

    def stalled() -> Iterator[pb.SignTransactionRequest]:
        yield GOOD[0]
        stop.wait(10)

    call = env_server.stub.SignTransactions(
        stalled(), metadata=(("x-request-id", "dl"),), timeout=seconds)
    with pytest.raises(grpc.RpcError) as caught:
        list(call)
    stop.set()
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 10
    while "request_id=dl" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(m for m in caplog.messages if "request_id=dl" in m)
    # grpc may end the request iterator (as a half-close would) a moment before it marks the
    # call as expired; the server then logs the stream as answered in full (OK).
    assert "status=DEADLINE_EXCEEDED" in line or "status=OK" in line, line
    assert "messages=1 answers=OK:1" in line
    assert "unexpected fault" not in caplog.text


def test_each_streamed_message_takes_the_application_path(serve, env_key, tmp_path):
    """Audit and freeze apply per message: each message is its own audited request
    (`<stream id>/<index>`), and a frozen key refuses every message, as for unary calls."""
    app = open_app(KeyRing([env_wallet(env_key)]), tmp_path)
    running = serve(app)
    requests = [GOOD[0], tx(to="0x1234"), GOOD[1]]
    replies = list(running.stub.SignTransactions(
        iter(requests), metadata=(("x-request-id", "s"),), timeout=10))
    freeze_key(state_config(tmp_path), "hot", "drill")
    time.sleep(0.6)  # the freeze is read at most 0.5 s old
    frozen = list(running.stub.SignTransactions(
        iter(GOOD[:2]), metadata=(("x-request-id", "f"),), timeout=10))

    audited = by_request(app.store)
    assert set(audited) == {"s/0", "s/1", "s/2", "f/0", "f/1"}
    for i, reply in enumerate(replies):
        outcome = audited[f"s/{i}"]["outcome"]
        assert outcome["method"] == "SignTransaction"
        assert outcome["status"] == ("OK" if reply.HasField("signed") else "INVALID_ARGUMENT")
    assert audited["s/0"]["outcome"]["result"] == "0x" + replies[0].signed.transaction_hash.hex()
    assert [r.error.code for r in frozen] == [grpc.StatusCode.FAILED_PRECONDITION.value[0]] * 2
    assert frozen[0].error.message == "key 'hot' is frozen: drill"
    assert audited["f/1"]["outcome"]["decision"] == "deny"
    assert verify(app.store).ok
