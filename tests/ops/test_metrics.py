"""Metrics scraped from the real Prometheus HTTP listener while a real server answers calls.

Metrics are process-wide (prometheus-client's default registry), so each test compares a scrape
before and after its own calls. The blocking backend wraps a real env key and only adds a pause.
"""

import threading
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from signer.errors import BackendUnavailable
from signer.metrics import UNKNOWN_KEY, MetricsListener
from signer.service import KeyRing
from signer.v1 import signer_pb2 as pb
from tests.support.faulty import faulty_signer

SIGN_MESSAGE = "signer.v1.SignerService/SignMessage"
GET_ADDRESS = "signer.v1.SignerService/GetAddress"


@pytest.fixture(scope="module")
def listener() -> Iterator[MetricsListener]:
    running = MetricsListener("127.0.0.1:0")
    yield running
    running.close()


def scrape_text(listener: MetricsListener) -> str:
    url = f"http://127.0.0.1:{listener.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.status == 200
        return str(reply.read().decode())


def scrape(listener: MetricsListener) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples = {}
    for family in text_string_to_metric_families(scrape_text(listener)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests(samples, method, status, key_id):
    return value(samples, "wallet_signer_requests_total", method=method, status=status,
                 key_id=key_id, client="")


def test_requests_latency_and_backend_metrics_move(listener, serve, env_key):
    running = serve(KeyRing([faulty_signer(env_key, lambda digest: None)]))
    caller_key_id = "caller-chosen-key-id-7f3a"
    before = scrape(listener)
    for i in range(3):
        running.stub.SignMessage(pb.SignMessageRequest(key_id="hot", message=b"%d" % i),
                                 timeout=5)
    with pytest.raises(grpc.RpcError):
        running.stub.GetAddress(pb.GetAddressRequest(key_id=caller_key_id), timeout=5)
    text = scrape_text(listener)
    after = scrape(listener)

    assert requests(after, SIGN_MESSAGE, "OK", "hot") - requests(before, SIGN_MESSAGE, "OK",
                                                                 "hot") == 3
    assert requests(after, GET_ADDRESS, "NOT_FOUND", UNKNOWN_KEY) - requests(
        before, GET_ADDRESS, "NOT_FOUND", UNKNOWN_KEY) == 1
    count = "wallet_signer_request_duration_seconds_count"
    assert value(after, count, method=SIGN_MESSAGE, key_id="hot") - value(
        before, count, method=SIGN_MESSAGE, key_id="hot") == 3
    backend = "wallet_signer_backend_sign_duration_seconds_count"
    assert value(after, backend, key_id="hot", backend="env") - value(
        before, backend, key_id="hot", backend="env") == 3
    assert value(after, "wallet_signer_calls_in_flight") == 0
    assert value(after, "wallet_signer_key_serving", key_id="hot") == 1
    assert value(after, "wallet_signer_server_workers") == 32
    # prometheus-client's process collector (Linux) and GC collector
    assert value(after, "process_resident_memory_bytes") > 0
    assert any(name == "python_gc_objects_collected_total" for name, _ in after)
    # neither the caller's key id nor the key is ever a label value
    assert caller_key_id not in text
    assert env_key.removeprefix("0x") not in text.lower()


def test_backend_errors_by_kind_and_key_serving(listener, serve, env_key):
    failing = threading.Event()
    calls = []

    def fail_when_told(digest):
        calls.append(digest)
        if failing.is_set():
            raise BackendUnavailable("hsm session lost")

    running = serve(KeyRing([faulty_signer(env_key, fail_when_told)]))
    before = scrape(listener)
    failing.set()
    with pytest.raises(grpc.RpcError) as caught:
        running.stub.SignMessage(pb.SignMessageRequest(key_id="hot", message=b"m"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    during = scrape(listener)
    errors = "wallet_signer_backend_errors_total"
    labels = {"key_id": "hot", "backend": "env", "kind": "BackendUnavailable"}
    assert value(during, errors, **labels) - value(before, errors, **labels) == 1
    assert value(during, "wallet_signer_key_serving", key_id="hot") == 0
    assert requests(during, SIGN_MESSAGE, "UNAVAILABLE", "hot") - requests(
        before, SIGN_MESSAGE, "UNAVAILABLE", "hot") == 1
    failing.clear()
    running.stub.SignMessage(pb.SignMessageRequest(key_id="hot", message=b"m"), timeout=5)
    assert value(scrape(listener), "wallet_signer_key_serving", key_id="hot") == 1


def test_in_flight_and_queued_calls(listener, serve, env_key):
    entered, release = threading.Event(), threading.Event()
    calls = []

    def block_after_self_test(digest):
        calls.append(digest)
        if len(calls) > 1:
            entered.set()
            assert release.wait(10)

    # one worker: the second call waits in the executor's queue
    running = serve(KeyRing([faulty_signer(env_key, block_after_self_test)]), max_workers=1)
    futures = [running.stub.SignMessage.future(
        pb.SignMessageRequest(key_id="hot", message=b"%d" % i), timeout=10) for i in range(2)]
    try:
        assert entered.wait(5)
        deadline = time.monotonic() + 5
        while True:
            samples = scrape(listener)
            if value(samples, "wallet_signer_calls_queued") == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert value(samples, "wallet_signer_calls_in_flight") == 1
        assert value(samples, "wallet_signer_calls_queued") == 1
    finally:
        release.set()
    for future in futures:
        assert len(future.result(timeout=10).signature) == 65
    samples = scrape(listener)
    assert value(samples, "wallet_signer_calls_in_flight") == 0
    assert value(samples, "wallet_signer_calls_queued") == 0


def test_hsm_pool_in_use_and_waiting(listener, softhsm_token):
    from tests.support.fixtures_pkcs11 import generate_key, open_signer

    generate_key(softhsm_token, "k")
    signer = open_signer(softhsm_token, "k", key_id="pool-metrics", pool_size=1)
    backend = signer.backend
    try:
        slot = backend._acquire(None)  # hold the only session, as a signing call would
        waiter = threading.Thread(target=signer.sign_message, args=(b"m", 10.0))
        waiter.start()
        deadline = time.monotonic() + 5
        while True:
            samples = scrape(listener)
            waiting = value(samples, "wallet_signer_hsm_session_waiters", key_id="pool-metrics")
            if waiting == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert waiting == 1
        assert value(samples, "wallet_signer_hsm_sessions_in_use", key_id="pool-metrics") == 1
        assert value(samples, "wallet_signer_hsm_sessions", key_id="pool-metrics") == 1
        backend._release(slot)
        waiter.join(10)
        samples = scrape(listener)
        assert value(samples, "wallet_signer_hsm_session_waiters", key_id="pool-metrics") == 0
        assert value(samples, "wallet_signer_hsm_sessions_in_use", key_id="pool-metrics") == 0
    finally:
        backend.close()


def test_kms_retries_are_counted(listener, kms_faults, open_kms_signer):
    signer = open_kms_signer("kms-retries")
    before = scrape(listener)
    kms_faults.add_fault(key=signer.backend.key_arn, error="ThrottlingException", times=2)
    signer.sign_message(b"m", 10.0)
    after = scrape(listener)
    retries = "wallet_signer_kms_retries_total"
    assert value(after, retries, key_id="kms-retries") - value(
        before, retries, key_id="kms-retries") == 2
    assert kms_faults.count("Sign", signer.backend.key_arn) == 3


def test_the_application_path_can_name_the_client_and_key(listener):
    """What an application path (not a door) calls once it has identified the caller."""
    from signer import metrics

    metrics.register_methods(["test.Door/Sign"])
    metrics.register_keys(["named-by-app"])
    before = scrape(listener)
    call, token = metrics.begin_call("test.Door/Sign", "")
    metrics.annotate_call(key_id="named-by-app", client="agent-7")
    metrics.end_call(call, token, "OK", 0.01)
    call, token = metrics.begin_call("not.Registered/Method", "")
    metrics.annotate_call(key_id="caller-typed-this")
    metrics.end_call(call, token, "OK", 0.01)
    metrics.annotate_call(client="outside a call")  # no-op
    after = scrape(listener)
    total = "wallet_signer_requests_total"
    labels = {"method": "test.Door/Sign", "status": "OK", "key_id": "named-by-app",
              "client": "agent-7"}
    assert value(after, total, **labels) - value(before, total, **labels) == 1
    labels = {"method": "(other)", "status": "OK", "key_id": UNKNOWN_KEY, "client": ""}
    assert value(after, total, **labels) - value(before, total, **labels) == 1
    assert "caller-typed-this" not in scrape_text(listener)


def test_stream_messages_by_status_and_oversized_message(listener, serve, env_key):
    from tests.support.bad_requests import GOOD

    running = serve(KeyRing([faulty_signer(env_key, lambda digest: None)]),
                    max_request_bytes=1024)
    method = "signer.v1.SignerService/SignTransactions"
    big = pb.SignTransactionRequest(key_id="hot", unsigned_transaction=b"\x02" * 2000)
    before = scrape(listener)
    replies = list(running.stub.SignTransactions(iter([GOOD[0], big, GOOD[1]]), timeout=10))
    assert [r.WhichOneof("result") for r in replies] == ["signed", "error", "signed"]
    assert replies[1].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert "(server.max_request_bytes)" in replies[1].error.message
    after = scrape(listener)
    messages = "wallet_signer_stream_messages_total"
    for status, key_id, n in (("OK", "hot", 2), ("RESOURCE_EXHAUSTED", "", 1)):
        labels = {"method": method, "status": status, "key_id": key_id}
        assert value(after, messages, **labels) - value(before, messages, **labels) == n
    assert requests(after, method, "OK", "") - requests(before, method, "OK", "") == 1
