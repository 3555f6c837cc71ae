"""Reload without restart, on a real `serve` process under load: SIGHUP adds, changes and
removes keys with 0 failed calls on the keys that stay; `keys reload --server` with one broken
key keeps that key on its previous version (health NOT_SERVING) and serves the rest."""

import json
import signal
import threading
import time
from pathlib import Path

import grpc
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from grpc_health.v1 import health_pb2, health_pb2_grpc

from signer import cli
from signer.store import open_store
from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc
from tests.support.serve_process import start_serve

CALLERS_PER_KEY = 4


def _key_file(directory: Path, name: str) -> tuple[Path, str]:
    account = Account.create()
    path = directory / f"{name}.key"
    path.write_text(account.key.hex())
    path.chmod(0o600)
    return path, account.address


def _write(path: Path, store: Path, keys: dict[str, Path]) -> None:
    text = f'[server]\nlisten = "127.0.0.1:0"\n[store]\nurl = "sqlite://{store}"\n'
    for key_id, key_file in keys.items():
        text += f'[keys.{key_id}]\nbackend = "env"\nprivate_key_file = "{key_file}"\n'
    path.write_text(text)


def _wait(condition, what: str, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_reload_adds_changes_removes_keys_under_load(tmp_path, capsys):
    a_file, a_address = _key_file(tmp_path, "a")
    b1_file, b1_address = _key_file(tmp_path, "b1")
    b2_file, b2_address = _key_file(tmp_path, "b2")
    c_file, c_address = _key_file(tmp_path, "c")
    config, store_path = tmp_path / "signer.toml", tmp_path / "state.db"
    _write(config, store_path, {"a": a_file, "b": b1_file})
    served = start_serve(tmp_path, config, {})
    channel = grpc.insecure_channel(served.target)
    stub = pb_grpc.SignerServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    stop = threading.Event()
    lock = threading.Lock()
    calls: list[tuple[str, float, float, str | None, str | None]] = []

    def caller(key_id: str) -> None:
        own = pb_grpc.SignerServiceStub(grpc.insecure_channel(served.target))
        while not stop.is_set():
            started = time.monotonic()
            try:
                reply = own.SignMessage(pb.SignMessageRequest(key_id=key_id, message=b"m"),
                                        timeout=10)
                signer = Account.recover_message(encode_defunct(b"m"),
                                                 signature=reply.signature)
                row = (key_id, started, time.monotonic(), signer, None)
            except grpc.RpcError as exc:
                row = (key_id, started, time.monotonic(), None, f"{exc.code().name}")
            with lock:
                calls.append(row)

    threads = [threading.Thread(target=caller, args=(k,), daemon=True)
               for k in ("a", "b") for _ in range(CALLERS_PER_KEY)]

    def status(key_id: str) -> int:
        return int(health.Check(health_pb2.HealthCheckRequest(
            service=f"signer.v1.SignerService/{key_id}"), timeout=5).status)

    try:
        for thread in threads:
            thread.start()
        time.sleep(2)
        # SIGHUP: b changes to another key, c is added
        _write(config, store_path, {"a": a_file, "b": b2_file, "c": c_file})
        first_started = time.monotonic()
        served.proc.send_signal(signal.SIGHUP)
        _wait(lambda: "keys reloaded: 1 added, 1 changed" in served.log(), "first reload")
        first_done = time.monotonic()
        assert stub.GetAddress(pb.GetAddressRequest(key_id="c"), timeout=5).address == c_address
        assert stub.GetAddress(pb.GetAddressRequest(key_id="b"), timeout=5).address == b2_address
        assert status("c") == health_pb2.HealthCheckResponse.SERVING
        time.sleep(2)
        # `keys reload --server`: c removed, b's new file is missing (broken)
        _write(config, store_path, {"a": a_file, "b": tmp_path / "missing.key"})
        capsys.readouterr()
        assert cli.main(["keys", "reload", "--server", served.target]) == 1
        out = capsys.readouterr().out
        assert "removed: c" in out and "added: -" in out and "changed: -" in out
        assert "FAILED b: keys.b: " in out and "(its previous version keeps serving)" in out
        with pytest.raises(grpc.RpcError) as caught:
            stub.SignMessage(pb.SignMessageRequest(key_id="c", message=b"m"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert stub.GetAddress(pb.GetAddressRequest(key_id="b"), timeout=5).address == b2_address
        assert status("b") == health_pb2.HealthCheckResponse.NOT_SERVING
        assert status("a") == health_pb2.HealthCheckResponse.SERVING
        assert status("c") == health_pb2.HealthCheckResponse.NOT_SERVING
        time.sleep(2)
        # fixed: b loads (as b1 again) and its health recovers
        _write(config, store_path, {"a": a_file, "b": b1_file})
        third_started = time.monotonic()
        assert cli.main(["keys", "reload", "--server", served.target]) == 0
        third_done = time.monotonic()
        assert status("b") == health_pb2.HealthCheckResponse.SERVING
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(20)
        served.proc.send_signal(signal.SIGTERM)
        served.proc.wait(20)
    failed = [c for c in calls if c[4] is not None]
    assert not failed, failed[:5]
    for key_id, started, finished, signer, _ in calls:
        if key_id == "a":
            assert signer == a_address
        elif finished < first_started:
            assert signer == b1_address
        elif first_done < started and finished < third_started:  # the broken load kept b2
            assert signer == b2_address
        elif started > third_done:
            assert signer == b1_address
    assert len(calls) > 100
    store = open_store(f"sqlite://{store_path}")
    try:
        records = [json.loads(r.body) for w in store.writers() for r in store.audit_rows(w)]
    finally:
        store.close()
    reloads = [r for r in records if r.get("action") == "reload_keys"]
    assert reloads[0]["operator"] == "SIGHUP"
    assert all(r["operator"].startswith("peer ipv4:127.0.0.1:") for r in reloads[1:])
    first, second, third = reloads
    assert first["added"] == [{"key_id": "c", "address": c_address}]
    assert first["changed"] == [{"key_id": "b", "old_address": b1_address,
                                 "new_address": b2_address}]
    assert second["removed"] == [{"key_id": "c", "address": c_address}]
    assert [f["key_id"] for f in second["failed"]] == ["b"]
    assert third["changed"] == [{"key_id": "b", "old_address": b2_address,
                                 "new_address": b1_address}]
    assert b1_file.read_text()[2:] not in served.log()


def test_a_config_that_does_not_load_changes_nothing(tmp_path, capsys):
    from signer import config as config_module
    from signer.runtime import Runtime

    a_file, a_address = _key_file(tmp_path, "a")
    config, store_path = tmp_path / "signer.toml", tmp_path / "state.db"
    _write(config, store_path, {"a": a_file})
    with Runtime(config_module.load(config), config_path=config) as runtime:
        runtime.start()
        runtime.grpc.self_test_and_mark_ready()
        target = f"127.0.0.1:{runtime.grpc.port}"
        config.write_text(config.read_text() + "[keys.b]\nbackend = \"nope\"\n")
        capsys.readouterr()
        assert cli.main(["keys", "reload", "--server", target]) == 1
        assert "reload failed: the server's config file did not load; nothing changed" in \
            capsys.readouterr().out
        stub = pb_grpc.SignerServiceStub(grpc.insecure_channel(target))
        reply = stub.ListKeys(pb.ListKeysRequest(), timeout=5)
        assert [(k.key_id, k.address, list(k.versions)) for k in reply.keys] == [
            ("a", a_address, [])]


def test_keyring_reload_reuses_unchanged_keys_and_closes_replaced_ones_once(tmp_path):
    from signer import config as config_module
    from signer.service import KeyRing

    a_file, _ = _key_file(tmp_path, "a")
    b_file, b_address = _key_file(tmp_path, "b")
    config = tmp_path / "signer.toml"
    _write(config, tmp_path / "state.db", {"a": a_file, "b": b_file})
    keyring = KeyRing.from_config(config_module.load(config))
    before = {s.key_id: s for s in keyring}
    closed: list[str] = []
    for signer in before.values():
        inner = signer.backend.close

        def counting(inner=inner, key_id=signer.key_id):  # type: ignore[no-untyped-def]
            closed.append(key_id)
            inner()

        signer.backend.close = counting  # type: ignore[method-assign]
    # only `drain` changes on a: nothing is re-opened; b is removed
    config.write_text(config.read_text().replace(
        f'private_key_file = "{a_file}"', f'private_key_file = "{a_file}"\ndrain = "none"'))
    _write_keys_only = config.read_text().split("[keys.b]")[0]
    config.write_text(_write_keys_only)
    changes = keyring.reload(config_module.load(config))
    assert (changes.added, changes.changed, changes.failed) == ([], [], [])
    assert changes.removed == [("b", b_address)]
    assert [s for s in keyring] == [before["a"]] and keyring.drain_rule("a") == "none"
    assert closed == []  # b's calls in flight may still finish on it
    keyring.close()
    assert sorted(closed) == ["a", "b"]  # each exactly once


def test_reload_reads_key_sources_too(tmp_path):
    """A keystore folder under [key_sources]: a file added is served after a reload, a file
    removed stops, a file that does not decrypt is reported and the rest still load."""
    from signer import config as config_module
    from signer.service import KeyRing
    from tests.support.fixtures_sources import PASSWORD, cheap_keystore

    folder = tmp_path / "agents"
    folder.mkdir()
    (tmp_path / "pw").write_text(PASSWORD)
    first, second = Account.create(), Account.create()
    (folder / "agent-1.json").write_text(json.dumps(cheap_keystore(first.key.hex())))
    config = tmp_path / "signer.toml"
    config.write_text(f'[key_sources.agents]\nbackend = "keystore"\nfolder = "{folder}"\n'
                      f'password_file = "{tmp_path / "pw"}"\n')
    keyring = KeyRing.from_config(config_module.load(config))
    try:
        assert [(s.key_id, s.address) for s in keyring] == [("agent-1", first.address)]
        kept = keyring.get("agent-1")
        (folder / "agent-2.json").write_text(json.dumps(cheap_keystore(second.key.hex())))
        (folder / "agent-3.json").write_text("{not a keystore")
        changes = keyring.reload(config_module.load(config))
        assert changes.added == [("agent-2", second.address)]
        assert [k for k, _ in changes.failed] == ["agent-3"]
        assert keyring.get("agent-1") is kept  # still listed: kept, not re-decrypted
        (folder / "agent-1.json").unlink()
        (folder / "agent-3.json").unlink()
        changes = keyring.reload(config_module.load(config))
        assert changes.removed == [("agent-1", first.address)]
        assert [s.key_id for s in keyring] == ["agent-2"]
    finally:
        keyring.close()
