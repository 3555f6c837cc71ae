"""mTLS and per-client access over a real TLS gRPC server, with certificates made in the test:
every kind of caller gets its precise status, and certificates rotate on SIGHUP without
dropping calls."""

import datetime as dt
import signal
import socket
import ssl
import threading
import time

import grpc
import pytest
from cryptography import x509

from signer.client import RemoteAccount, TlsFiles, open_channel
from signer.config import ClientConfig, ServerConfig
from signer.errors import ConfigError
from signer.grpc.server import SignerServer
from signer.service import KeyRing
from signer.tls import ReloadableTls
from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc
from tests.conftest import env_wallet, open_app
from tests.support.serve_process import start_serve
from tests.support.tls_certs import NOW, CertificateAuthority

HOT, COLD = "0x" + "11" * 32, "0x" + "22" * 32
SIGNING = ["GetAddress", "SignTransaction", "SignMessage", "SignTypedData"]
CLIENTS = {
    "trader": ClientConfig(identity="spiffe://prod/agents/trader", keys=["hot"], methods=SIGNING),
    "reader": ClientConfig(identity="reader.ops.internal", keys=["*"],
                           methods=["ListKeys", "GetAddress"]),
    # a CN is matched only when asked for by kind (an untyped identity is a URI or DNS SAN)
    "monitor": ClientConfig(identity="cn:monitor", keys=["cold"], methods=["ListKeys"]),
    "operator": ClientConfig(identity="cn:operator", keys=["hot"], methods=["Reload"]),
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(directory)
    other = CertificateAuthority(directory, "other CA")
    return {
        "ca": ca,
        "server": ca.server(),
        "trader": ca.issue("trader", uris=("spiffe://prod/agents/trader",), cn="trader"),
        "reader": ca.issue("reader", dns=("reader.ops.internal",), cn="ignored-cn"),
        "monitor": ca.issue("monitor", cn="monitor"),
        "operator": ca.issue("operator", cn="operator"),
        "stranger": ca.issue("stranger", uris=("spiffe://prod/agents/stranger",)),
        "expired": ca.issue("expired", uris=("spiffe://prod/agents/trader",),
                            not_before=NOW - dt.timedelta(days=3),
                            not_after=NOW - dt.timedelta(days=1)),
        "future": ca.issue("future", uris=("spiffe://prod/agents/trader",),
                           not_before=NOW + dt.timedelta(days=1)),
        "foreign": other.issue("foreign", uris=("spiffe://prod/agents/trader",)),
    }


@pytest.fixture(scope="module")
def mtls_server(pki, tmp_path_factory):
    server_cert = pki["server"]
    config = ServerConfig(
        listen="127.0.0.1:0", tls_cert_file=server_cert.cert_file,
        tls_key_file=server_cert.key_file, client_ca_file=pki["ca"].cert_file,
    )
    keyring = KeyRing([env_wallet(HOT, "hot"), env_wallet(COLD, "cold")])
    app = open_app(keyring, tmp_path_factory.mktemp("state"), clients=CLIENTS)
    server = SignerServer(app, config)
    server.self_test_and_mark_ready()
    yield f"127.0.0.1:{server.port}"
    server.stop(0)


def stub_for(target: str, pki, who: str | None) -> pb_grpc.SignerServiceStub:
    issued = pki[who] if who else None
    tls = TlsFiles(
        ca=pki["ca"].cert_pem,
        cert=issued.cert_pem if issued else None,
        key=issued.key_pem if issued else None,
    )
    return pb_grpc.SignerServiceStub(open_channel(target, tls))


def status_of(call, request) -> tuple[grpc.StatusCode, str]:
    try:
        call(request, timeout=10)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


GET_HOT = pb.GetAddressRequest(key_id="hot")
SIGN_HOT = pb.SignMessageRequest(key_id="hot", message=b"hi")


@pytest.mark.parametrize("who", [None, "expired", "future", "foreign"])
def test_callers_the_handshake_refuses(mtls_server, pki, who):
    code, _ = status_of(stub_for(mtls_server, pki, who).GetAddress, GET_HOT)
    assert code == grpc.StatusCode.UNAVAILABLE  # the TLS handshake failed: no call was made


def test_a_valid_certificate_that_names_no_client_is_unauthenticated(mtls_server, pki):
    code, details = status_of(stub_for(mtls_server, pki, "stranger").GetAddress, GET_HOT)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert details == (
        "client certificate ('spiffe://prod/agents/stranger') matches no configured client"
    )


@pytest.mark.parametrize(("who", "call", "request_", "expected"), [
    ("trader", "GetAddress", GET_HOT, (grpc.StatusCode.OK, "")),
    ("trader", "SignMessage", SIGN_HOT, (grpc.StatusCode.OK, "")),
    ("trader", "GetAddress", pb.GetAddressRequest(key_id="cold"), (
        grpc.StatusCode.PERMISSION_DENIED,
        "client 'trader' may not use key 'cold' for GetAddress")),
    ("trader", "SignMessage", pb.SignMessageRequest(key_id="cold", message=b"x"), (
        grpc.StatusCode.PERMISSION_DENIED,
        "client 'trader' may not use key 'cold' for SignMessage")),
    ("trader", "ListKeys", pb.ListKeysRequest(), (
        grpc.StatusCode.PERMISSION_DENIED, "client 'trader' may not call ListKeys")),
    ("reader", "GetAddress", pb.GetAddressRequest(key_id="cold"), (grpc.StatusCode.OK, "")),
    ("reader", "SignMessage", SIGN_HOT, (
        grpc.StatusCode.PERMISSION_DENIED, "client 'reader' may not call SignMessage (key 'hot')")),
    ("monitor", "GetAddress", GET_HOT, (
        grpc.StatusCode.PERMISSION_DENIED, "client 'monitor' may not call GetAddress (key 'hot')")),
    # Reload is an operator's method: only a client that lists it may call it
    ("reader", "Reload", pb.ReloadRequest(), (
        grpc.StatusCode.PERMISSION_DENIED, "client 'reader' may not call Reload")),
    ("trader", "Reload", pb.ReloadRequest(), (
        grpc.StatusCode.PERMISSION_DENIED, "client 'trader' may not call Reload")),
    ("operator", "Reload", pb.ReloadRequest(), (grpc.StatusCode.OK, "")),
    ("operator", "GetAddress", GET_HOT, (
        grpc.StatusCode.PERMISSION_DENIED, "client 'operator' may not call GetAddress (key 'hot')")),
])
def test_known_clients_get_exactly_their_keys_and_methods(mtls_server, pki, who, call, request_,
                                                          expected):
    stub = stub_for(mtls_server, pki, who)
    assert status_of(getattr(stub, call), request_) == expected


@pytest.mark.parametrize(("who", "keys"), [("reader", ["hot", "cold"]), ("monitor", ["cold"])])
def test_list_keys_lists_only_the_callers_keys(mtls_server, pki, who, keys):
    reply = stub_for(mtls_server, pki, who).ListKeys(pb.ListKeysRequest(), timeout=10)
    assert [k.key_id for k in reply.keys] == keys


def test_remote_account_connects_with_mtls_in_one_line(mtls_server, pki):
    trader = pki["trader"]
    account = RemoteAccount.connect(
        mtls_server, "hot", tls_ca=pki["ca"].cert_file, tls_cert=trader.cert_file,
        tls_key=trader.key_file,
    )
    assert account.address == env_wallet(HOT).address
    assert "PRIVATE" not in repr(TlsFiles(pki["ca"].cert_pem, trader.cert_pem, trader.key_pem))


def test_health_takes_its_mtls_flags_from_the_environment(mtls_server, pki, monkeypatch, capsys):
    """The image's HEALTHCHECK is a bare `wallet-signer health`: under mTLS its client
    certificate comes from WALLET_SIGNER_HEALTH_* (docs/deploy/image.md)."""
    from signer import cli

    monkeypatch.setenv("WALLET_SIGNER_HEALTH_SERVER", mtls_server)
    monkeypatch.setenv("WALLET_SIGNER_HEALTH_TIMEOUT", "5")
    monkeypatch.setenv("WALLET_SIGNER_HEALTH_TLS_CA", str(pki["ca"].cert_file))
    assert cli.main(["health"]) == 1  # TLS without a client certificate: the handshake fails
    assert capsys.readouterr().err == f"{mtls_server}: UNAVAILABLE\n"
    monkeypatch.setenv("WALLET_SIGNER_HEALTH_TLS_CERT", str(pki["monitor"].cert_file))
    monkeypatch.setenv("WALLET_SIGNER_HEALTH_TLS_KEY", str(pki["monitor"].key_file))
    assert cli.main(["health"]) == 0
    assert capsys.readouterr().out == f"{mtls_server}: SERVING\n"
    assert cli.main(["health", "--server", "127.0.0.1:1", "--timeout", "0.5"]) == 1  # flags win
    assert capsys.readouterr().err == "127.0.0.1:1: UNAVAILABLE\n"
    monkeypatch.setenv("WALLET_SIGNER_HEALTH_TLS_KEY", "")  # empty is unset
    assert cli.main(["health"]) == cli.EXIT_INPUT
    assert capsys.readouterr().err == (
        "wallet-signer: TLS options: give both tls_cert and tls_key (mTLS), or neither\n")
    monkeypatch.setenv("WALLET_SIGNER_HEALTH_TIMEOUT", "soon")
    with pytest.raises(SystemExit) as exited:
        cli.main(["health"])
    assert exited.value.code == 2
    assert "argument --timeout: invalid float value: 'soon'" in capsys.readouterr().err


def test_a_stream_checks_each_message_against_the_callers_certificate(mtls_server, pki):
    """SignTransactions over mTLS: each message is checked as unary SignTransaction is (key and
    method of the client the certificate names); a stranger, or a client that may not sign
    transactions, is refused when the stream opens, with the status unary would give."""
    tx = pb.Transaction(type=2, chain_id=1, to="0x" + "35" * 20, gas_limit=21000,
                        max_fee_per_gas="10", max_priority_fee_per_gas="1")
    requests = [pb.SignTransactionRequest(key_id=k, transaction=tx) for k in ("hot", "cold", "hot")]
    trader = list(stub_for(mtls_server, pki, "trader").SignTransactions(iter(requests), timeout=10))
    assert [r.HasField("signed") for r in trader] == [True, False, True]
    assert (trader[1].error.code, trader[1].error.message) == (
        grpc.StatusCode.PERMISSION_DENIED.value[0],
        "client 'trader' may not use key 'cold' for SignTransaction")
    unary = {k: status_of(stub_for(mtls_server, pki, who).SignTransaction, requests[0])
             for k, who in (("reader", "reader"), ("stranger", "stranger"))}
    for who, (code, details) in unary.items():
        with pytest.raises(grpc.RpcError) as refused:
            list(stub_for(mtls_server, pki, who).SignTransactions(iter(requests[:1]), timeout=10))
        assert refused.value.code() == code
        assert details.startswith(refused.value.details())  # the stream names no key yet
        assert code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)


def test_bad_tls_files_stop_the_server_naming_the_file(pki, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    server = pki["server"]
    for config, message in [
        (ServerConfig(tls_cert_file=garbage, tls_key_file=server.key_file),
         f"server.tls_cert_file {garbage}: not a PEM certificate"),
        (ServerConfig(tls_cert_file=server.cert_file, tls_key_file=garbage),
         f"server.tls_key_file {garbage}: not an unencrypted PEM private key"),
        (ServerConfig(tls_cert_file=server.cert_file, tls_key_file=pki["trader"].key_file),
         f"server.tls_key_file {pki['trader'].key_file} does not match the certificate in "
         f"{server.cert_file}"),
        (ServerConfig(tls_cert_file=server.cert_file, tls_key_file=server.key_file,
                      client_ca_file=tmp_path / "missing.crt"),
         f"server.client_ca_file: cannot read {tmp_path / 'missing.crt'}: No such file or directory"),
    ]:
        with pytest.raises(ConfigError) as caught:
            ReloadableTls(config)
        assert str(caught.value) == message
        assert "PRIVATE KEY" not in str(caught.value)


def _server_certificate(port: int, pki) -> bytes:
    """The certificate a fresh handshake sees (DER), through the ssl module."""
    context = ssl.create_default_context(cadata=pki["ca"].cert_pem.decode())
    context.load_cert_chain(pki["trader"].cert_file, pki["trader"].key_file)
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _der(pem: bytes) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


def test_sighup_rotates_the_server_certificate_without_failing_a_call(pki, tmp_path, env_key):
    live_cert, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    first, second = pki["ca"].server("first"), pki["ca"].server("second")
    live_cert.write_bytes(first.cert_pem)
    live_key.write_bytes(first.key_pem)
    trader = pki["trader"]
    config = tmp_path / "signer.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\ntls_cert_file = "{live_cert}"\n'
        f'tls_key_file = "{live_key}"\nclient_ca_file = "{pki["ca"].cert_file}"\n'
        f'[store]\nurl = "sqlite://{tmp_path / "state.db"}"\n'
        '[keys.hot]\nbackend = "env"\nprivate_key_env = "HOT_WALLET_KEY"\n'
        f'[clients.trader]\nidentity = "spiffe://prod/agents/trader"\nkeys = ["hot"]\n'
    )
    served = start_serve(tmp_path, config, {"HOT_WALLET_KEY": env_key})
    try:
        port = int(served.target.rsplit(":", 1)[1])
        assert _server_certificate(port, pki) == _der(first.cert_pem)
        stub = pb_grpc.SignerServiceStub(open_channel(
            served.target, TlsFiles(pki["ca"].cert_pem, trader.cert_pem, trader.key_pem)))
        failures: list[BaseException] = []
        done = threading.Event()
        calls = 0

        def keep_signing() -> None:
            nonlocal calls
            while not done.is_set():
                try:
                    stub.SignMessage(pb.SignMessageRequest(key_id="hot", message=b"m"), timeout=10)
                    calls += 1
                except grpc.RpcError as exc:
                    failures.append(exc)

        worker = threading.Thread(target=keep_signing)
        worker.start()
        time.sleep(0.3)
        # a bad file first: the old certificate stays, the reason is logged
        live_key.write_text("garbage")
        served.proc.send_signal(signal.SIGHUP)
        _wait_for(lambda: "TLS reload failed, keeping the current certificates" in served.log())
        assert _server_certificate(port, pki) == _der(first.cert_pem)
        # then the real rotation
        live_cert.write_bytes(second.cert_pem)
        live_key.write_bytes(second.key_pem)
        served.proc.send_signal(signal.SIGHUP)
        _wait_for(lambda: "TLS material reloaded" in served.log())
        assert _server_certificate(port, pki) == _der(second.cert_pem)
        time.sleep(0.3)
        done.set()
        worker.join(20)
        assert failures == [] and calls > 0
        # a new channel handshakes against the new certificate and is served
        fresh = pb_grpc.SignerServiceStub(open_channel(
            served.target, TlsFiles(pki["ca"].cert_pem, trader.cert_pem, trader.key_pem)))
        assert fresh.GetAddress(pb.GetAddressRequest(key_id="hot"), timeout=10).address
        assert first.key_pem.decode() not in served.log()
        assert "PRIVATE KEY" not in served.log()
    finally:
        served.proc.send_signal(signal.SIGTERM)
        served.proc.wait(20)


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
