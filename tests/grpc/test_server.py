"""Server behaviour around the handlers: health gating, shutdown, fault mapping, request ids.

The backends here wrap a real env key and add the one fault each test needs (a pause, garbage,
an exception): faults a real backend produces only by accident.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from signer.config import ServerConfig
from signer.errors import BackendUnavailable, PermissionDenied
from signer.grpc.server import SignerServer
from signer.service import KeyRing
from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc
from signer.wallet import WalletSigner
from tests.conftest import env_wallet, open_app
from tests.support.faulty import FaultyBackend, faulty_signer


def health_status(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service="signer.v1.SignerService"), timeout=5).status


def test_not_serving_until_self_test_passes(env_key):
    server = SignerServer(open_app(KeyRing([env_wallet(env_key)])), ServerConfig(listen="127.0.0.1:0"))
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        assert health_status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
        server.self_test_and_mark_ready()
        assert health_status(channel) == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(0)


def test_failed_self_test_keeps_not_serving(env_key):
    other = env_wallet("0x" + "11" * 32).backend
    signer = faulty_signer(env_key, lambda digest: other.sign_digest(digest, None))
    server = SignerServer(open_app(KeyRing([signer])), ServerConfig(listen="127.0.0.1:0"))
    try:
        with pytest.raises(BackendUnavailable, match="does not recover to the key's public key"):
            server.self_test_and_mark_ready()
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        assert health_status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        server.stop(0)


def test_wrong_key_signature_never_leaves(serve, env_key):
    other = env_wallet("0x" + "11" * 32).backend
    calls = []

    def swap_after_self_test(digest: bytes) -> bytes | None:
        calls.append(digest)
        return other.sign_digest(digest, None) if len(calls) > 1 else None

    running = serve(KeyRing([faulty_signer(env_key, swap_after_self_test)]))
    with pytest.raises(grpc.RpcError) as caught:
        running.stub.SignMessage(pb.SignMessageRequest(key_id="hot", message=b"hi"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "does not recover to the key's public key" in caught.value.details()


@pytest.mark.parametrize(("error", "status"), [
    (BackendUnavailable("hsm session lost"), grpc.StatusCode.UNAVAILABLE),
    (PermissionDenied("kms:Sign denied"), grpc.StatusCode.PERMISSION_DENIED),
    (RuntimeError("bug with secret detail"), grpc.StatusCode.UNAVAILABLE),
    (RecursionError(), grpc.StatusCode.UNAVAILABLE),
])
def test_backend_faults_map_to_precise_status(serve, env_key, error, status, caplog):
    calls = []

    def fail_after_self_test(digest: bytes) -> None:
        calls.append(digest)
        if len(calls) > 1:
            raise error

    running = serve(KeyRing([faulty_signer(env_key, fail_after_self_test)]))
    with pytest.raises(grpc.RpcError) as caught:
        running.stub.SignMessage(pb.SignMessageRequest(key_id="hot", message=b"hi"), timeout=5)
    assert caught.value.code() == status
    if isinstance(error, RuntimeError | RecursionError):
        assert caught.value.details() == "signer fault: nothing was signed; retry later"
        assert "unexpected fault in /signer.v1.SignerService/SignMessage" in caplog.text
    else:
        assert caught.value.details() == str(error)
    assert running.stub.ListKeys(pb.ListKeysRequest(), timeout=5).keys  # still serving


def test_sigterm_style_stop_lets_in_flight_calls_finish(env_key):
    entered, release = threading.Event(), threading.Event()
    calls = []

    def block_after_self_test(digest: bytes) -> None:
        calls.append(digest)
        if len(calls) > 1:
            entered.set()
            assert release.wait(10)

    signer = faulty_signer(env_key, block_after_self_test)
    server = SignerServer(open_app(KeyRing([signer])), ServerConfig(listen="127.0.0.1:0"))
    server.self_test_and_mark_ready()
    stub = pb_grpc.SignerServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    with ThreadPoolExecutor(2) as pool:
        in_flight = pool.submit(
            stub.SignMessage, pb.SignMessageRequest(key_id="hot", message=b"hi"), timeout=20
        )
        assert entered.wait(10)
        stopping = pool.submit(server.stop, 15)
        threading.Timer(0.3, release.set).start()
        assert len(in_flight.result(timeout=20).signature) == 65
        stopping.result(timeout=20)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListKeys(pb.ListKeysRequest(), timeout=2)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_backend_gets_the_callers_remaining_deadline(serve, env_key):
    seen: list[float | None] = []
    backend = FaultyBackend(env_wallet(env_key).backend, lambda digest: None)
    original = backend.sign_digest

    def recording(digest: bytes, timeout: float | None) -> bytes:
        seen.append(timeout)
        return original(digest, timeout)

    backend.sign_digest = recording  # type: ignore[method-assign]
    running = serve(KeyRing([WalletSigner("hot", backend)]))
    running.stub.SignMessage(pb.SignMessageRequest(key_id="hot", message=b"a"))
    running.stub.SignMessage(pb.SignMessageRequest(key_id="hot", message=b"b"), timeout=7)
    assert seen[0] is None  # the start-up self-test
    assert seen[1] is None  # grpc reports "no deadline" as ~9.2e18 s: the servicer passes None
    assert 0 < seen[2] <= 7.5  # grpc-timeout travels rounded up to its unit


def test_request_id_is_echoed_and_logged(env_server, caplog):
    caplog.set_level("INFO", logger="signer.access")
    _, call = env_server.stub.ListKeys.with_call(
        pb.ListKeysRequest(), metadata=(("x-request-id", "abc-123"),), timeout=5
    )
    assert ("x-request-id", "abc-123") in call.trailing_metadata()
    assert "request_id=abc-123 status=OK" in caplog.text
    _, call = env_server.stub.ListKeys.with_call(pb.ListKeysRequest(), timeout=5)
    generated = dict(call.trailing_metadata())["x-request-id"]
    assert len(generated) == 32 and generated in caplog.text
    with pytest.raises(grpc.RpcError) as caught:
        env_server.stub.GetAddress(pb.GetAddressRequest(key_id="cold"),
                                   metadata=(("x-request-id", "err-1"),), timeout=5)
    assert ("x-request-id", "err-1") in caught.value.trailing_metadata()
    assert "request_id=err-1 status=NOT_FOUND" in caplog.text


def test_key_ring_names_signers_by_their_own_key_id(env_key):
    signer = env_wallet(env_key, key_id="ops")
    assert KeyRing([signer]).get("ops") is signer
    with pytest.raises(ValueError, match="two signers named 'ops'"):
        KeyRing([signer, env_wallet(env_key, key_id="ops")])
