"""KMS faults seen through the real gRPC server: retries, final status codes and messages, other
keys unaffected, deadlines honored. Faults come from the emulator's injector; backoff is
shortened (tests/support/fixtures_kms.py), the retry logic is botocore's own."""

import threading
import time

import grpc
import pytest

from signer.service import KeyRing
from signer.v1 import signer_pb2 as pb

Code = grpc.StatusCode


def _sign(running, key_id, timeout=10.0):
    return running.stub.SignMessage(pb.SignMessageRequest(key_id=key_id, message=b"m"),
                                    timeout=timeout)


def _status(running, key_id, timeout=10.0):
    with pytest.raises(grpc.RpcError) as caught:
        _sign(running, key_id, timeout)
    return caught.value.code(), caught.value.details()


@pytest.fixture
def two_keys(kms_faults, serve, open_kms_signer):
    """(server, emulator, KMS key id of "bad", of "good") with max_attempts = 3."""
    bad, good = open_kms_signer("bad"), open_kms_signer("good")
    running = serve(KeyRing([bad, good]))
    kms_faults.clear()  # forget the start-up self-test's Sign calls
    kms_ids = {name: s.backend.key_arn for name, s in (("bad", bad), ("good", good))}
    return running, kms_faults, kms_ids["bad"], kms_ids["good"]


@pytest.mark.parametrize(("error", "http", "code", "fragment", "attempts"), [
    ("ThrottlingException", 400, Code.UNAVAILABLE,
     "KMS Sign throttled after 3 attempts (ThrottlingException): the ECC signing request quota", 3),
    ("KMSInternalException", 500, Code.UNAVAILABLE,
     "KMS Sign failed after 3 attempts: AWS-side fault (KMSInternalException); retry later", 3),
    ("ServiceUnavailable", 503, Code.UNAVAILABLE, "AWS-side fault (ServiceUnavailable)", 3),
    ("KMSInvalidStateException", 400, Code.FAILED_PRECONDITION,
     "(KMSInvalidStateException): the KMS key's state does not allow this (pending deletion?", 1),
    ("DisabledException", 400, Code.FAILED_PRECONDITION,
     "(DisabledException): the KMS key is disabled; enable it", 1),
    ("AccessDeniedException", 400, Code.PERMISSION_DENIED,
     "denied (AccessDeniedException): allow kms:Sign on this key for the service's IAM", 1),
])
def test_fault_gives_status_after_counted_attempts(two_keys, error, http, code, fragment,
                                                   attempts):
    running, emulator, bad, good = two_keys
    aws_text = "User: arn:aws:iam::123456789012:role/signer is not authorized"
    emulator.add_fault(key=bad, error=error, status=http, message=aws_text)
    status, details = _status(running, "bad")
    assert status == code
    assert details.startswith("key 'bad': KMS Sign")
    assert fragment in details
    assert "123456789012" not in details and "testing" not in details  # AWS text stays in logs
    assert emulator.count("Sign", bad) == attempts
    _sign(running, "good")  # the other key is unaffected
    assert emulator.count("Sign", good) == 1


def test_transient_faults_are_retried_to_success(two_keys):
    running, emulator, bad, _ = two_keys
    emulator.add_fault(key=bad, error="ThrottlingException", times=1)
    emulator.add_fault(key=bad, error="KMSInternalException", status=500, times=1)
    assert len(_sign(running, "bad").signature) == 65
    assert emulator.count("Sign", bad) == 3


def test_slow_responses_past_the_read_timeout_are_unavailable(kms_faults, serve, open_kms_signer):
    signer = open_kms_signer("slow", read_timeout_seconds=0.3, max_attempts=2)
    running = serve(KeyRing([signer]))
    kms_faults.clear()
    kms_faults.add_fault(latency=0.6)
    started = time.monotonic()
    status, details = _status(running, "slow", timeout=10)
    assert status == Code.UNAVAILABLE
    assert "KMS endpoint unreachable or timed out (ReadTimeoutError)" in details
    assert kms_faults.count("Sign") == 2
    assert time.monotonic() - started < 2.0


def test_slow_key_does_not_hold_up_other_keys(two_keys):
    running, emulator, bad, _ = two_keys
    emulator.add_fault(key=bad, latency=1.5)
    slow_results = []
    slow_calls = [threading.Thread(target=lambda: slow_results.append(_sign(running, "bad")))
                  for _ in range(4)]
    for thread in slow_calls:
        thread.start()
    time.sleep(0.2)  # the slow calls are in flight
    started = time.monotonic()
    for _ in range(10):
        _sign(running, "good", timeout=2)
    assert time.monotonic() - started < 1.0
    for thread in slow_calls:
        thread.join(10)
    assert len(slow_results) == 4


def test_deadline_is_honored_and_frees_the_worker(kms_faults, serve, open_kms_signer):
    """Two workers, both taken by calls on a 3 s KMS: after their 0.3 s deadlines the server
    must give the workers back, or the next key's call would wait 3 s."""
    slow, fast = open_kms_signer("slow"), open_kms_signer("fast")
    running = serve(KeyRing([slow, fast]), max_workers=2)
    kms_faults.clear()
    kms_faults.add_fault(key=slow.backend.key_arn, latency=3.0)
    outcomes = []
    calls = [threading.Thread(target=lambda: outcomes.append(_status(running, "slow", 0.3)))
             for _ in range(2)]
    for thread in calls:
        thread.start()
    for thread in calls:
        thread.join(5)
    assert [code for code, _ in outcomes] == [Code.DEADLINE_EXCEEDED] * 2
    started = time.monotonic()
    _sign(running, "fast", timeout=1.5)
    assert time.monotonic() - started < 1.0
    assert kms_faults.count("Sign", slow.backend.key_arn) == 2  # latency alone is not retried


def test_server_side_deadline_status_and_message(kms_faults, open_kms_signer):
    """What the service itself answers when the deadline passes (the client's own timer would
    also say DEADLINE_EXCEEDED, so check the servicer's mapping directly)."""
    from signer import errors
    from signer.grpc.errors import status_for

    signer = open_kms_signer("slow")
    kms_faults.add_fault(latency=1.0)
    with pytest.raises(errors.DeadlineExceeded) as caught:
        signer.sign_message(b"m", timeout=0.2)
    assert status_for(caught.value) == Code.DEADLINE_EXCEEDED
    assert str(caught.value) == (
        "key 'slow': KMS did not sign within the caller's deadline (0.200s); the call was "
        "abandoned: KMS may still complete it, but no signature is returned for this request")
