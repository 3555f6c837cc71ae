"""The env key never leaves: not in logs, errors, reprs, tracebacks or responses."""

import logging
import os
import pickle
import signal
import traceback

import grpc
import pytest

from signer import cli
from signer.backends.env import EnvBackend
from signer.config import load
from signer.errors import ConfigError
from signer.service import KeyRing
from signer.v1 import signer_pb2 as pb
from signer.v1 import signer_pb2_grpc as pb_grpc
from tests.support.serve_process import env_config, start_serve

SECRET_HEX = "c0ffee" * 10 + "beef"  # a valid key whose text is easy to grep for


def secret_forms() -> list[str]:
    raw = bytes.fromhex(SECRET_HEX)
    return [SECRET_HEX, SECRET_HEX.upper(), SECRET_HEX[:16], raw.hex()[-16:], repr(raw)[2:20],
            str(int(SECRET_HEX, 16))[:20]]


def assert_no_secret(text: str | bytes) -> None:
    if isinstance(text, bytes):
        assert bytes.fromhex(SECRET_HEX) not in text
        text = text.decode("latin-1")
    for form in secret_forms():
        assert form not in text, f"secret leaked as {form!r}"


def test_served_process_never_prints_the_key(tmp_path):
    running = start_serve(tmp_path, env_config(tmp_path), {"HOT_WALLET_KEY": "0x" + SECRET_HEX})
    try:
        channel = grpc.insecure_channel(running.target)
        client = pb_grpc.SignerServiceStub(channel)
        replies = [
            client.ListKeys(pb.ListKeysRequest(), timeout=5),
            client.GetAddress(pb.GetAddressRequest(key_id="hot"), timeout=5),
            client.SignMessage(pb.SignMessageRequest(key_id="hot", message=b"x"), timeout=5),
            client.SignTransaction(pb.SignTransactionRequest(key_id="hot", transaction=pb.Transaction(
                type=2, chain_id=1, to="0x" + "35" * 20, gas_limit=21000, max_fee_per_gas="1")),
                timeout=5),
        ]
        for reply in replies:
            assert_no_secret(reply.SerializeToString())
        for bad in (pb.SignTransactionRequest(key_id="hot", unsigned_transaction=b"\x02\xff"),
                    pb.SignTransactionRequest(key_id=SECRET_HEX)):
            with pytest.raises(grpc.RpcError) as caught:
                client.SignTransaction(bad, timeout=5)
            if bad.key_id != SECRET_HEX:  # an id the caller sent is echoed; not the key
                assert_no_secret(caught.value.details())
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(20) == 0
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
    log = running.log()
    assert "hot" in log and "SERVING" in log
    assert_no_secret(log)  # the access log records no key_id, so not even the echoed one


def test_debug_logging_in_process_never_prints_the_key(tmp_path, monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HOT_WALLET_KEY", SECRET_HEX)
    keyring = KeyRing.from_config(load(env_config(tmp_path), environ={}))
    signer = keyring.get("hot")
    signer.self_test()
    signer.sign_message(b"hello")
    texts = [repr(keyring), repr(signer), repr(signer.backend), str(vars(signer)), caplog.text,
             capsys.readouterr().out]
    for text in texts:
        assert_no_secret(text)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(signer.backend)


@pytest.mark.parametrize("content", [
    SECRET_HEX + "00",  # one byte too long
    SECRET_HEX[:-1] + "g",  # not hex
    "0x" + SECRET_HEX + " trailing",
    "f" * 64,  # out of range
])
def test_malformed_key_errors_do_not_echo_it(tmp_path, content, capsys):
    key_file = tmp_path / "key"
    key_file.write_text(content)
    with pytest.raises(ConfigError) as caught:
        EnvBackend.from_source("hot", None, key_file)
    rendered = "".join(traceback.format_exception(caught.value))
    assert str(key_file) in rendered
    assert_no_secret(rendered)
    assert content not in rendered


def test_cli_error_for_bad_key_does_not_echo_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOT_WALLET_KEY", SECRET_HEX + "zz")
    assert cli.main(["serve", "--config", str(env_config(tmp_path))]) == 2
    captured = capsys.readouterr()
    assert "HOT_WALLET_KEY: expected 64 hex digits" in captured.err
    assert_no_secret(captured.err + captured.out)
    assert os.environ["HOT_WALLET_KEY"] not in captured.err
