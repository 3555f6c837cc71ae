"""The command line as operators use it: a real `wallet-signer serve` process, SIGTERM, keys."""

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from eth_account import Account
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from signer import cli
from signer.store.sql import SCHEMA_VERSION
from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc
from tests.support.serve_process import ServeProcess, env_config, start_serve

EXE = [sys.executable, "-m", "signer.cli"]


@pytest.fixture
def served(tmp_path: Path, env_key: str) -> Iterator[ServeProcess]:
    running = start_serve(tmp_path, env_config(tmp_path), {"HOT_WALLET_KEY": env_key})
    yield running
    if running.proc.poll() is None:
        running.proc.kill()
        running.proc.wait(10)


def test_serve_health_reflection_and_sigterm(served: ServeProcess, env_key: str):
    channel = grpc.insecure_channel(served.target)
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "signer.v1.SignerService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for r in replies for s in r.list_services_response.service}
    assert {"signer.v1.SignerService", "grpc.health.v1.Health"} <= names
    address = pb_grpc.SignerServiceStub(channel).GetAddress(pb.GetAddressRequest(key_id="hot"))
    assert address.address == Account.from_key(env_key).address

    assert _run(["health", "--server", served.target]).strip() == f"{served.target}: SERVING"

    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=20) == 0
    log = served.log()
    assert "received SIGTERM: finishing in-flight calls" in log and "stopped" in log
    assert "for development only" in log.lower()


def test_cli_sign_keys_list_and_address_against_server(served: ServeProcess, tmp_path, env_key):
    tx = {"type": 2, "chainId": 1, "nonce": 3, "to": "0x" + "35" * 20, "value": "0x10",
          "gas": 21000, "maxFeePerGas": 100, "maxPriorityFeePerGas": 2, "data": "0xabcd"}
    tx_path = tmp_path / "tx.json"
    tx_path.write_text(json.dumps(tx))
    out = _run(["sign", "--key", "hot", "--tx", str(tx_path), "--server", served.target])
    result = json.loads(out)
    expected = Account.sign_transaction({**tx, "value": 16}, env_key)
    assert result["raw_transaction"] == expected.raw_transaction.to_0x_hex()
    assert result["sender"] == Account.from_key(env_key).address

    assert _run(["keys", "list", "--server", served.target]).split() == [
        "hot", "env", Account.from_key(env_key).address, "active"]
    assert _run(["address", "hot", "--server", served.target]).strip() == Account.from_key(env_key).address


def test_client_commands_report_an_unreachable_server(capsys):
    for args in (["keys", "list", "--server", "127.0.0.1:1"], ["address", "hot", "--server",
                 "127.0.0.1:1"]):
        assert cli.main(args) == 1
        assert capsys.readouterr().err.startswith("wallet-signer: UNAVAILABLE: ")


def test_health_command_fails_without_server(capsys):
    assert cli.main(["health", "--server", "127.0.0.1:1", "--timeout", "0.5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("127.0.0.1:1: ") and ("UNAVAILABLE" in err or "DEADLINE_EXCEEDED" in err)


def test_cli_sign_reports_grpc_errors(served: ServeProcess, tmp_path):
    tx_path = tmp_path / "tx.json"
    tx_path.write_text(json.dumps({"type": 2, "chainId": 0, "to": "0x" + "35" * 20, "gas": 1}))
    done = subprocess.run([*EXE, "sign", "--key", "hot", "--tx", str(tx_path), "--server",
                           served.target], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "INVALID_ARGUMENT: chain_id: required" in done.stderr


@pytest.mark.parametrize(("content", "fragment"), [
    ("not json", "Expecting value"),
    ("[1, 2]", "expected a JSON object"),
    ('{"type": 2, "gasPrise": 1}', "unsupported transaction fields: ['gasPrise']"),
    ('{"type": 2, "value": "lots"}', "invalid literal for int()"),
])
def test_cli_sign_refuses_a_bad_tx_file_before_calling(tmp_path, capsys, content, fragment):
    tx_path = tmp_path / "tx.json"
    tx_path.write_text(content)
    # no server at this address: the file is judged before any connection is made
    assert cli.main(["sign", "--key", "hot", "--tx", str(tx_path), "--server", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"wallet-signer: --tx {tx_path}: ") and fragment in err


def test_local_keys_list_and_address(tmp_path, env_key, monkeypatch, capsys):
    monkeypatch.setenv("HOT_WALLET_KEY", env_key)
    config = env_config(tmp_path)
    assert cli.main(["keys", "list", "--config", str(config)]) == 0
    # the table, then the address-pinning line to paste (issue 17)
    assert capsys.readouterr().out.split("\n\n")[0].split() == [
        "hot", "env", Account.from_key(env_key).address, "active"]
    assert cli.main(["address", "hot", "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip() == Account.from_key(env_key).address
    assert cli.main(["address", "cold", "--config", str(config)]) == 2
    assert "no key named 'cold' is configured" in capsys.readouterr().err


def test_non_loopback_without_tls_is_refused(tmp_path, env_key, monkeypatch, capsys):
    monkeypatch.setenv("HOT_WALLET_KEY", env_key)
    config = env_config(tmp_path, listen="0.0.0.0:0")
    assert cli.main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "is not a loopback address and TLS is not configured" in err
    assert "--insecure-listen" in err


def test_production_refuses_env_keys(tmp_path, env_key, monkeypatch, capsys):
    monkeypatch.setenv("HOT_WALLET_KEY", env_key)
    config = env_config(tmp_path, extra='environment = "production"\n')
    assert cli.main(["serve", "--config", str(config)]) == 2
    assert "development-only env backend" in capsys.readouterr().err


def test_missing_key_source_fails_fast_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HOT_WALLET_KEY", raising=False)
    assert cli.main(["serve", "--config", str(env_config(tmp_path))]) == 2
    assert "keys.hot: environment variable HOT_WALLET_KEY (private key) is not set" in capsys.readouterr().err


def test_invalid_config_fails_fast(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nlisten = 'nope'\n")
    assert cli.main(["serve", "--config", str(path)]) == 2
    assert "server.listen" in capsys.readouterr().err


def test_freeze_audit_and_migrate_commands(served: ServeProcess, tmp_path, env_key, capsys):
    config = str(tmp_path / "signer.toml")
    stub = pb_grpc.SignerServiceStub(grpc.insecure_channel(served.target))
    stub.SignMessage(pb.SignMessageRequest(key_id="hot", message=b"before"), timeout=5)
    assert _run(["keys", "freeze", "hot", "--reason", "agent compromised", "--config", config])
    assert _run(["keys", "list", "--server", served.target]).split("\t")[-1].strip() == (
        "FROZEN: agent compromised")
    assert _run(["keys", "unfreeze", "hot", "--config", config]).strip() == (
        "key 'hot' is no longer frozen")
    assert _run(["keys", "unfreeze", "hot", "--config", config]).strip() == (
        "key 'hot' was not frozen")
    assert cli.main(["keys", "freeze", "cold", "--reason", "x", "--config", config]) == 2
    assert "no key 'cold' in the configuration (keys: hot)" in capsys.readouterr().err
    assert cli.main(["keys", "freeze", "hot", "--reason", " ", "--config", config]) == 2
    assert "--reason: 1 to 512 printable characters" in capsys.readouterr().err

    verified = _run(["audit", "verify", "--config", config])
    assert verified.startswith("audit log intact: ") and "records in 4 chains" in verified
    lines = _run(["audit", "tail", "-n", "12", "--json", "--config", config]).splitlines()
    # The serving process writes a witness record every audit_witness_seconds (10 s): on a
    # loaded machine one can land among the last records, so they are left out here.
    records = [r for r in map(json.loads, lines) if r["kind"] != "witness"][-3:]
    assert [(r["kind"], r.get("action"), r.get("was_frozen")) for r in records] == [
        ("admin", "unfreeze", True), ("chain_start", None, None), ("admin", "unfreeze", False)]
    assert records[0]["key_id"] == "hot" and records[0]["operator"]
    text = _run(["audit", "tail", "--config", config])
    assert "kind=outcome method=SignMessage key_id=hot decision=allow status=OK" in text
    assert "kind=admin" in text
    assert _run(["store", "migrate", "--config", config]).strip() == f"store schema at version {SCHEMA_VERSION}"

    # tampering: edit one stored record, and verify names it and exits 1
    import sqlite3

    with sqlite3.connect(tmp_path / "state.db") as db:
        writer, seq = db.execute(
            "SELECT writer, seq FROM audit_log WHERE body LIKE '%\"kind\":\"outcome\"%'"
        ).fetchone()
        db.execute("UPDATE audit_log SET body = replace(body, 'SignMessage', 'SignTypedData') "
                   "WHERE writer = ? AND seq = ?", (writer, seq))
    done = subprocess.run([*EXE, "audit", "verify", "--config", config], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout.startswith(
        f"audit log TAMPERED: writer {writer} record {seq}: contents do not match its hash")


def _run(args: list[str]) -> str:
    done = subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout
