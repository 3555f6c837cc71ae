"""Overload and liveness: bounded concurrency, no signing after the deadline or before the
self-test, oversized requests answered like any error, bounded close and shutdown.

Slow backends here are either real ones made slow (the KMS emulator's latency injection, a held
SoftHSM session) or `tests.support.faulty.FaultyBackend`, a wrapper around a real env key that only
adds a pause.
"""

import json
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from signer.config import ServerConfig
from signer.errors import BackendUnavailable, DeadlineExceeded
from signer.grpc.server import SHUTDOWN_MARGIN_SECONDS, SignerServer
from signer.service import KeyRing
from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc
from tests.conftest import open_app
from tests.support.faulty import faulty_signer
from tests.support.serve_process import start_serve

DIGEST = bytes(range(32))


def blocking_signer(env_key):
    """A wrapped env key whose signatures after the self-test wait for `release`."""
    entered, release = threading.Semaphore(0), threading.Event()
    calls = []

    def block_after_self_test(digest):
        calls.append(digest)
        if len(calls) > 1:
            entered.release()
            assert release.wait(10)

    return faulty_signer(env_key, block_after_self_test), entered, release


def test_calls_beyond_max_concurrent_calls_are_refused_at_once(serve, env_key):
    signer, entered, release = blocking_signer(env_key)
    running = serve(KeyRing([signer]), max_workers=4, max_concurrent_calls=2)
    request = pb.SignMessageRequest(key_id="hot", message=b"m")
    held = [running.stub.SignMessage.future(request, timeout=15) for _ in range(2)]
    try:
        assert entered.acquire(timeout=5) and entered.acquire(timeout=5)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            running.stub.SignMessage(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.monotonic() - started < 1.0  # refused, not queued
    finally:
        release.set()
    for future in held:
        assert len(future.result(timeout=10).signature) == 65
    assert len(running.stub.SignMessage(request, timeout=5).signature) == 65


def test_oversized_request_has_request_id_and_access_line(serve, env_signer, caplog):
    caplog.set_level("INFO", logger="signer.access")
    running = serve(KeyRing([env_signer]), max_request_bytes=1024)
    big = pb.SignMessageRequest(key_id="hot", message=b"x" * 2000)
    with pytest.raises(grpc.RpcError) as caught:
        running.stub.SignMessage(big, metadata=(("x-request-id", "big-1"),), timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ("x-request-id", "big-1") in caught.value.trailing_metadata()
    assert "more than the server's limit of 1024 (server.max_request_bytes)" in (
        caught.value.details())
    assert "request_id=big-1 status=RESOURCE_EXHAUSTED" in caplog.text
    # at the limit it is served
    fits = pb.SignMessageRequest(key_id="hot", message=b"x" * 1000)
    assert fits.ByteSize() <= 1024
    assert len(running.stub.SignMessage(fits, timeout=5).signature) == 65


def test_signing_is_refused_until_the_self_test_has_passed(env_key):
    calls = []
    signer = faulty_signer(env_key, calls.append)
    server = SignerServer(open_app(KeyRing([signer])), ServerConfig(listen="127.0.0.1:0"))
    try:
        stub = pb_grpc.SignerServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
        with pytest.raises(grpc.RpcError) as caught:
            stub.SignMessage(pb.SignMessageRequest(key_id="hot", message=b"m"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert caught.value.details() == "key 'hot' has not passed its self-test yet"
        assert calls == []  # the backend was never asked
        assert stub.GetAddress(pb.GetAddressRequest(key_id="hot"), timeout=5).address
        server.self_test_and_mark_ready()
        assert len(calls) == 1
        stub.SignMessage(pb.SignMessageRequest(key_id="hot", message=b"m"), timeout=5)
        assert len(calls) == 2
    finally:
        server.stop(0)


def test_expired_deadline_never_reaches_the_env_backend(env_key):
    calls = []
    signer = faulty_signer(env_key, calls.append)
    for timeout in (0.0, -1.0):
        with pytest.raises(DeadlineExceeded, match="nothing was signed"):
            signer.sign_message(b"m", timeout)
    assert calls == []


@pytest.fixture
def c_sign_count(monkeypatch):
    """Counts C_Sign calls of a pkcs11 signer's library (each still goes to SoftHSM)."""

    def count(signer):
        raw = signer.backend._connection.library.raw
        real = raw.sign_ecdsa
        seen = []

        def counted(*args):
            seen.append(1)
            return real(*args)

        monkeypatch.setattr(raw, "sign_ecdsa", counted)
        return seen

    return count


def test_expired_deadline_never_reaches_c_sign(pkcs11_signer, c_sign_count):
    signed = c_sign_count(pkcs11_signer)
    backend = pkcs11_signer.backend
    for timeout in (0.0, -0.5):
        with pytest.raises(DeadlineExceeded, match="nothing was signed"):
            backend.sign_digest(DIGEST, timeout)
        with pytest.raises(DeadlineExceeded, match="nothing was signed"):
            pkcs11_signer.sign_message(b"m", timeout)
    assert signed == []
    pkcs11_signer.sign_message(b"m", 5.0)
    assert len(signed) == 1


def test_deadline_passing_while_waiting_for_a_session_never_reaches_c_sign(
        softhsm_token, c_sign_count, monkeypatch):
    from tests.support.fixtures_pkcs11 import generate_key, open_signer

    generate_key(softhsm_token, "k")
    signer = open_signer(softhsm_token, "k", pool_size=1)
    signed = c_sign_count(signer)
    pool = signer.backend._pool
    real_get = pool.get

    # The session is handed over just after the caller's deadline (a waiter woken late): the
    # only way to hit that instant on purpose is to delay the hand-over.
    def late_get(block=True, timeout=None):
        slot = real_get(block, timeout)
        if timeout is not None:
            time.sleep(timeout + 0.05)
        return slot

    monkeypatch.setattr(pool, "get", late_get)
    try:
        with pytest.raises(DeadlineExceeded, match="while waiting for an HSM session"):
            signer.backend.sign_digest(DIGEST, 0.1)
        assert signed == []
        assert pool.qsize() == 1  # the session went back to the pool
        monkeypatch.setattr(pool, "get", real_get)
        signer.sign_message(b"m", 5.0)
        assert len(signed) == 1
    finally:
        signer.backend.close()


def test_expired_deadline_never_reaches_kms_sign(kms_faults, open_kms_signer):
    signer = open_kms_signer("late")
    arn = signer.backend.key_arn
    kms_faults.clear()
    for timeout in (0.0, -1.0):
        with pytest.raises(DeadlineExceeded):
            signer.backend.sign_digest(DIGEST, timeout)
        with pytest.raises(DeadlineExceeded, match="nothing was signed"):
            signer.sign_message(b"m", timeout)
    assert kms_faults.count("Sign", arn) == 0
    signer.sign_message(b"m", 5.0)
    assert kms_faults.count("Sign", arn) == 1


def test_pkcs11_close_is_bounded_while_a_session_is_busy(softhsm_token):
    from tests.support.fixtures_pkcs11 import generate_key, open_signer

    generate_key(softhsm_token, "k")
    signer = open_signer(softhsm_token, "k", pool_size=2)
    backend = signer.backend
    slot = backend._acquire(None)  # a signing call that never returns its session
    started = time.monotonic()
    backend.close(timeout=0.3)
    assert 0.25 < time.monotonic() - started < 2
    with pytest.raises(BackendUnavailable, match="backend is closed"):
        signer.sign_message(b"m", 1.0)
    backend._release(slot)  # the call ends: a second close finishes the job
    backend.close(timeout=1)
    assert backend._closed_sessions == 2


def test_sigterm_ends_the_process_within_grace_with_a_call_in_flight(
        tmp_path: Path, kms_faults, make_kms_key):
    """A KMS key made slow by the emulator (latency far beyond the grace), one call in flight,
    SIGTERM: the process is gone within shutdown_grace_seconds plus the margin."""
    from tests.support.kms_emulator import emulator_environment

    kms_key = make_kms_key()
    grace = 1.0
    config = tmp_path / "signer.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\nshutdown_grace_seconds = {grace}\n'
        f'[metrics]\nlisten = "127.0.0.1:0"\n'
        f'[keys.slow]\nbackend = "kms"\nkms_key_id = "{kms_key}"\nregion = "us-east-1"\n'
        f'endpoint_url = "{kms_faults.endpoint_url}"\nread_timeout_seconds = 30\n'
    )
    running = start_serve(tmp_path, config, dict(emulator_environment()))
    try:
        # structured logs by default off a TTY: every line is one JSON object
        records = [json.loads(line) for line in running.log().splitlines()]
        metrics_line = next(r["message"] for r in records if r["message"].startswith("metrics on"))
        with urllib.request.urlopen(metrics_line.split()[-1], timeout=5) as reply:
            assert 'wallet_signer_key_serving{key_id="slow"} 1.0' in reply.read().decode()

        kms_faults.clear()  # forget the start-up self-test's Sign
        kms_faults.add_fault(key=kms_key, latency=20)
        stub = pb_grpc.SignerServiceStub(grpc.insecure_channel(running.target))
        in_flight = stub.SignMessage.future(pb.SignMessageRequest(key_id="slow", message=b"m"),
                                            timeout=60)
        deadline = time.monotonic() + 10
        while kms_faults.count("Sign", kms_key) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert kms_faults.count("Sign", kms_key) == 1  # the call is inside KMS
        started = time.monotonic()
        running.proc.send_signal(signal.SIGTERM)
        try:
            running.proc.wait(timeout=grace + SHUTDOWN_MARGIN_SECONDS + 5)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running after SIGTERM:\n{running.log()}")
        elapsed = time.monotonic() - started
        assert elapsed < grace + SHUTDOWN_MARGIN_SECONDS + 1.0, elapsed
        with pytest.raises(grpc.RpcError):
            in_flight.result(timeout=5)
        assert "shutdown did not finish within" in running.log()
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait(10)


def test_kms_concurrency_follows_max_workers(kms_faults, make_kms_key):
    """No hidden cap: the KMS client's connections and call threads are max_workers + 1."""
    from signer.config import validate

    config = validate({
        "server": {"max_workers": 5},
        "keys": {"ops": {"backend": "kms", "kms_key_id": make_kms_key(), "region": "us-east-1",
                         "endpoint_url": kms_faults.endpoint_url}},
    }, "test config")
    keyring = KeyRing.from_config(config)
    try:
        backend = keyring.get("ops").backend
        assert backend._client.meta.config.max_pool_connections == 6
        assert backend._call_pool._max_workers == 6
    finally:
        keyring.close()


def test_worker_threads_all_start_with_the_server_and_end_with_it(env_key):
    """The worker pool is started whole (a fixed thread count from start-up: growth is a
    leak) and its idle threads end at stop, not at process exit."""

    def workers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("rpc_")]

    before = set(workers())
    server = SignerServer(open_app(KeyRing([faulty_signer(env_key, lambda digest: None)])),
                          ServerConfig(listen="127.0.0.1:0", max_workers=5))
    try:
        assert len(set(workers()) - before) == 5
        server.self_test_and_mark_ready()
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        stub = pb_grpc.SignerServiceStub(channel)
        for _ in range(20):
            stub.SignMessage(pb.SignMessageRequest(key_id="hot", message=b"m"), timeout=5)
        assert len(set(workers()) - before) == 5
        channel.close()
    finally:
        server.stop(0)
    deadline = time.monotonic() + 5
    while set(workers()) - before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert set(workers()) - before == set()
