"""`server.health_listen`: a plaintext listener that serves grpc.health.v1 and nothing else, for
probes that cannot present a client certificate (Kubernetes' native gRPC probe), beside a
main listener that requires mTLS. Real TLS, certificates made in the test."""

import socket
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from signer.client import TlsFiles, open_channel
from signer.config import ClientConfig, ServerConfig, validate
from signer.errors import ConfigError
from signer.grpc.server import SignerServer
from signer.service import KeyRing
from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc
from tests.conftest import env_wallet, open_app
from tests.support.tls_certs import CertificateAuthority

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE = "signer.v1.SignerService"
HOT = "0x" + "11" * 32
AGENT = ClientConfig(identity="spiffe://prod/agents/trader", keys=["hot"])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    ca = CertificateAuthority(tmp_path_factory.mktemp("pki"))
    return {"ca": ca, "server": ca.server(),
            "agent": ca.issue("agent", uris=("spiffe://prod/agents/trader",))}


def mtls_config(pki, **options: object) -> ServerConfig:
    return ServerConfig(
        listen="127.0.0.1:0", tls_cert_file=pki["server"].cert_file,
        tls_key_file=pki["server"].key_file, client_ca_file=pki["ca"].cert_file,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def server(pki, tmp_path):
    app = open_app(KeyRing([env_wallet(HOT, "hot")]), tmp_path, clients={"agent": AGENT})
    running = SignerServer(app, mtls_config(pki, health_listen="127.0.0.1:0"))
    running.self_test_and_mark_ready()
    yield running
    running.stop(0)


def check(port: int, name: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status


def code_of(call, request) -> grpc.StatusCode:
    try:
        call(request, timeout=5)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_plaintext_health_answers_every_name_while_the_main_port_requires_mtls(server, pki):
    assert server.health_port not in (None, 0, server.port)
    for name in ("", SERVICE, f"{SERVICE}/hot"):
        assert check(server.health_port, name) == SERVING
    unknown = health_pb2.HealthCheckRequest(service=f"{SERVICE}/nope")
    with grpc.insecure_channel(f"127.0.0.1:{server.health_port}") as channel:
        assert code_of(health_pb2_grpc.HealthStub(channel).Check, unknown) == (
            grpc.StatusCode.NOT_FOUND)
    # the main port: plaintext is refused, the agent's certificate signs
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        assert code_of(health_pb2_grpc.HealthStub(channel).Check,
                       health_pb2.HealthCheckRequest()) == grpc.StatusCode.UNAVAILABLE
    agent = TlsFiles(ca=pki["ca"].cert_pem, cert=pki["agent"].cert_pem, key=pki["agent"].key_pem)
    stub = pb_grpc.SignerServiceStub(open_channel(f"127.0.0.1:{server.port}", agent))
    assert stub.GetAddress(pb.GetAddressRequest(key_id="hot"), timeout=5).address


def test_the_health_port_serves_no_signing_and_no_reflection(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.health_port}") as channel:
        signer = pb_grpc.SignerServiceStub(channel)
        assert code_of(signer.ListKeys, pb.ListKeysRequest()) == grpc.StatusCode.UNIMPLEMENTED
        assert code_of(signer.SignMessage, pb.SignMessageRequest(key_id="hot", message=b"m")) == (
            grpc.StatusCode.UNIMPLEMENTED)
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as raised:
            list(reflect.ServerReflectionInfo(iter([request]), timeout=5))
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_shutdown_turns_the_health_port_not_serving_before_it_closes(server):
    # stop() first tells the health servicer (shared by both listeners) to stop serving, so a
    # readiness probe sees NOT_SERVING while in-flight calls drain
    server.health_reporter.stop(timeout=1.0)
    for name in ("", SERVICE, f"{SERVICE}/hot"):
        assert check(server.health_port, name) == NOT_SERVING


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_health_port_that_cannot_be_bound_is_a_config_error(pki, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        app = open_app(KeyRing([env_wallet(HOT, "hot")]), tmp_path)
        config = mtls_config(pki, health_listen=f"127.0.0.1:{busy}")
        with pytest.raises(ConfigError) as raised:
            SignerServer(app, config)
    assert str(raised.value) == (f"server.health_listen: cannot bind 127.0.0.1:{busy} (in use, "
                                 "or not an address of this host)")


def test_a_main_port_that_cannot_be_bound_releases_the_health_port(pki, tmp_path):
    health_port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = mtls_config(pki, health_listen=f"127.0.0.1:{health_port}").model_copy(
            update={"listen": f"127.0.0.1:{taken.getsockname()[1]}"})
        with pytest.raises(RuntimeError, match="Failed to bind"):
            SignerServer(open_app(KeyRing([env_wallet(HOT, "hot")]), tmp_path), config)
    # the health listener was stopped: a new server binds the same health port
    again = SignerServer(open_app(KeyRing([env_wallet(HOT, "hot")]), tmp_path / "again"),
                         config.model_copy(update={"listen": "127.0.0.1:0"}))
    try:
        assert again.health_port == health_port
    finally:
        again.stop(0)


@pytest.mark.parametrize(("health_listen", "message"), [
    ("0.0.0.0:50051", "health_listen 0.0.0.0:50051 uses the port of listen 0.0.0.0:50051"),
    ("8081", "server.health_listen: Value error, expected HOST:PORT"),
    ("0.0.0.0:70000", "server.health_listen: Value error, expected HOST:PORT"),
])
def test_bad_health_listen_is_refused_naming_the_field(health_listen, message):
    with pytest.raises(ConfigError) as raised:
        validate({"server": {"listen": "0.0.0.0:50051", "health_listen": health_listen}}, "c")
    assert message in str(raised.value)


def test_liveness_is_serving_from_readiness_until_shutdown(pki, tmp_path):
    app = open_app(KeyRing([env_wallet(HOT, "hot")]), tmp_path, clients={"agent": AGENT})
    running = SignerServer(app, mtls_config(pki, health_listen="127.0.0.1:0"))
    try:
        # before the start-up self-test nothing serves, liveness included
        assert check(running.health_port, "liveness") == NOT_SERVING
        running.self_test_and_mark_ready()
        assert check(running.health_port, "liveness") == SERVING
        running.health_reporter.stop(timeout=1.0)
        assert check(running.health_port, "liveness") == NOT_SERVING
    finally:
        running.stop(0)


def test_liveness_stays_serving_while_every_key_fails(kms_faults, serve, open_kms_signer):
    """A shared backend down takes every key out of readiness, not the process out of
    liveness: restarting every replica would not bring KMS back, and the periodic self-test
    revives the keys without a restart."""
    running = serve(KeyRing([open_kms_signer("a")]), health_check_interval_seconds=0.2,
                    health_listen="127.0.0.1:0")
    kms_faults.add_fault(key=None, error="ServiceUnavailable", status=503)
    deadline = time.monotonic() + 10
    while check(running.server.health_port, SERVICE) != NOT_SERVING:
        assert time.monotonic() < deadline, "the overall name never went NOT_SERVING"
        time.sleep(0.05)
    assert check(running.server.health_port, f"{SERVICE}/a") == NOT_SERVING
    assert check(running.server.health_port, "liveness") == SERVING
    kms_faults.clear()
