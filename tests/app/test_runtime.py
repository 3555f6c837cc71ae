"""The Runtime opens every part a config asks for (keyring, store, application, metrics, gRPC,
JSON-RPC, the SIGHUP reload hook) and closes them all, also when a later part fails to open.
Real listeners on loopback, a real SQLite store, an env key from the environment."""

import json
import socket
import urllib.request
from pathlib import Path

import grpc
import pytest
from eth_account import Account
from grpc_health.v1 import health_pb2, health_pb2_grpc

from signer import config as config_module
from signer.errors import ConfigError
from signer.grpc.server import SERVICE_NAME
from signer.runtime import Runtime
from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc


def write_config(directory: Path, jsonrpc_port: int = 0) -> Path:
    path = directory / "signer.toml"
    path.write_text(
        '[server]\nlisten = "127.0.0.1:0"\n'
        f'[store]\nurl = "sqlite://{directory / "state.db"}"\n'
        '[metrics]\nlisten = "127.0.0.1:0"\n'
        f'[jsonrpc]\nlisten = "127.0.0.1:{jsonrpc_port}"\n'
        '[keys.hot]\nbackend = "env"\nprivate_key_env = "RUNTIME_TEST_KEY"\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    account = Account.create()
    monkeypatch.setenv("RUNTIME_TEST_KEY", account.key.hex())
    return str(account.address)


def refused(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_start_opens_every_configured_part_and_close_closes_them(tmp_path: Path, key: str):
    path = write_config(tmp_path)
    with Runtime(config_module.load(path), config_path=path) as runtime:
        runtime.start().grpc.self_test_and_mark_ready()
        assert runtime.metrics is not None and runtime.jsonrpc is not None
        ports = {"grpc": runtime.grpc.port, "metrics": runtime.metrics.port,
                 "jsonrpc": runtime.jsonrpc.port}
        with grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel:
            reply = pb_grpc.SignerServiceStub(channel).GetAddress(
                pb.GetAddressRequest(key_id="hot"), timeout=10)
            assert reply.address == key
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_accounts"}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{ports['jsonrpc']}", body,
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["result"] == [key]
        url = f"http://127.0.0.1:{ports['metrics']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert b'wallet_signer_requests_total{client="",key_id="hot"' in response.read()
        assert runtime.app.store.url == f"sqlite://{tmp_path / 'state.db'}"
    assert {name: refused(port) for name, port in ports.items()} == {
        "grpc": True, "metrics": True, "jsonrpc": True}
    runtime.close()  # a second close does nothing


def test_a_part_that_fails_to_open_closes_the_parts_before_it(tmp_path: Path, key: str):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        path = write_config(tmp_path, jsonrpc_port=taken.getsockname()[1])
        runtime = Runtime(config_module.load(path), config_path=path)
        with pytest.raises(ConfigError, match=r"jsonrpc\.listen: cannot bind"):
            runtime.start()
    assert runtime.jsonrpc is None and runtime.metrics is not None
    assert refused(runtime.grpc.port) and refused(runtime.metrics.port)


def test_sighup_reloads_the_config_file_given_and_keeps_it_when_broken(tmp_path: Path, key: str):
    path = write_config(tmp_path)
    with Runtime(config_module.load(path), config_path=path) as runtime:
        runtime.start()
        before = runtime.app.access
        runtime.grpc.reload()  # what SIGHUP calls
        reloaded = runtime.app.access
        assert reloaded is not before
        path.write_text("[server\n", encoding="utf-8")
        runtime.grpc.reload()
        assert runtime.app.access is reloaded
    with Runtime(config_module.load(write_config(tmp_path))) as runtime:
        runtime.start()  # no file to re-read: no hook
        assert runtime.grpc.reload_hooks == []


def test_a_part_not_open_is_named(tmp_path: Path):
    runtime = Runtime(config_module.load(None, {}))
    with pytest.raises(RuntimeError, match="the gRPC server is not started"):
        runtime.on_reload(lambda: None)
