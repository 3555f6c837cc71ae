"""Structured logs: one access record per call, in JSON or text, that a caller cannot forge."""

import io
import json
import logging
import shlex
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest

from signer import logs
from signer.v1 import signer_pb2 as pb

# A request id that tries to end its own field and start others.
FORGED_IDS = [
    "x status=OK peer=ipv4:10.0.0.1:1",
    'a" status=OK key_id="hot',
    "back\\slash status=OK",
    "=status=OK",
]


@contextmanager
def fresh_root_logger(monkeypatch) -> Iterator[logging.Logger]:
    """The root logger as in a fresh process (no handlers) for the block; pytest's own
    handlers and whatever logs.configure changes are put back after."""
    root = logging.getLogger()
    for flag in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, flag, getattr(logging, flag))
    saved = list(root.handlers), root.level
    root.handlers[:] = []
    try:
        yield root
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


@pytest.fixture
def access_log() -> Iterator[tuple[io.StringIO, logging.Handler]]:
    """The access logger's records, written to a buffer by a handler we choose the format of."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    logger = logging.getLogger("signer.access")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield buffer, handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


# A key id no test configures (known key ids are process-wide label values).
UNCONFIGURED = "never-configured-3b9f"


def call_with_request_id(env_server, request_id: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        env_server.stub.GetAddress(pb.GetAddressRequest(key_id=UNCONFIGURED),
                                   metadata=(("x-request-id", request_id),), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert ("x-request-id", request_id) in caught.value.trailing_metadata()


@pytest.mark.parametrize("request_id", FORGED_IDS)
def test_text_access_line_cannot_be_forged(env_server, access_log, request_id):
    buffer, handler = access_log
    handler.setFormatter(logging.Formatter(logs.TEXT_FORMAT))
    call_with_request_id(env_server, request_id)
    line = buffer.getvalue().strip().splitlines()[-1]
    _, _, message = line.partition("signer.access: ")
    method, *pairs = shlex.split(message)
    fields = dict(pair.split("=", 1) for pair in pairs)
    assert method == "/signer.v1.SignerService/GetAddress"
    assert fields["status"] == "NOT_FOUND"
    assert fields["request_id"] == request_id
    assert fields["key_id"] == "(unknown)"
    assert fields["peer"].startswith("ipv4:127.0.0.1:")
    assert [p.split("=", 1)[0] for p in pairs] == [
        "peer", "key_id", "client", "request_id", "status", "ms"]


@pytest.mark.parametrize("request_id", FORGED_IDS)
def test_json_access_record(env_server, access_log, request_id):
    buffer, handler = access_log
    handler.setFormatter(logs.JsonFormatter())
    call_with_request_id(env_server, request_id)
    env_server.stub.SignMessage(pb.SignMessageRequest(key_id="hot", message=b"m"), timeout=5)
    failed, signed = (json.loads(line) for line in buffer.getvalue().splitlines()[-2:])
    assert failed["request_id"] == request_id
    assert failed["status"] == "NOT_FOUND"
    assert failed["message"] == "/signer.v1.SignerService/GetAddress"
    assert signed["status"] == "OK" and signed["key_id"] == "hot"
    assert signed["level"] == "INFO" and signed["logger"] == "signer.access"
    assert isinstance(signed["ms"], float) and signed["ms"] > 0
    assert signed["peer"].startswith("ipv4:127.0.0.1:")
    assert len(signed["request_id"]) == 32  # generated
    assert signed["time"].endswith("+00:00")


def test_json_formatter_plain_records_and_exceptions():
    formatter = logs.JsonFormatter()
    record = logging.LogRecord("signer", logging.WARNING, __file__, 1, "key %r: %s",
                               ("hot", 'quote " and\nnewline'), None)
    entry = json.loads(formatter.format(record))
    assert entry["message"] == "key 'hot': quote \" and\nnewline"
    assert entry["level"] == "WARNING"
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("signer", logging.ERROR, __file__, 1, "failed", (),
                                   sys.exc_info())
    entry = json.loads(formatter.format(record))
    assert "ValueError: boom" in entry["exception"]
    # a field cannot overwrite the record's own keys
    record = logging.LogRecord("signer.access", logging.INFO, __file__, 1,
                               logs.Fields("m", level="FAKE", status="OK"), (), None)
    entry = json.loads(formatter.format(record))
    assert entry["level"] == "INFO" and entry["status"] == "OK"


def test_configure_defaults_to_json_off_a_tty(capsys, monkeypatch):
    with fresh_root_logger(monkeypatch) as root:
        logs.configure(None, "INFO")  # pytest's captured stderr is not a TTY
        logging.getLogger("signer.test").info("listening on %s (port %d)", "127.0.0.1:0", 5)
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert json.loads(line)["message"] == "listening on 127.0.0.1:0 (port 5)"
        logs.configure("text", "INFO")  # configured already: no second handler
        assert len(root.handlers) == 1
        root.handlers[:] = []
        logs.configure("text", "INFO")
        logging.getLogger("signer.test").info("hello")
        assert capsys.readouterr().err.strip().endswith("INFO signer.test: hello")


@pytest.mark.parametrize(("flag", "formatter"), [("json", logs.JsonFormatter),
                                                 ("text", logging.Formatter)])
def test_cli_log_format_flag(flag, formatter, capsys, monkeypatch):
    from signer import cli

    with fresh_root_logger(monkeypatch) as root:
        code = cli.main(["--log-format", flag, "health", "--server", "127.0.0.1:1",
                         "--timeout", "0.2"])
        assert code == 1
        assert [type(h.formatter) for h in root.handlers] == [formatter]
    with pytest.raises(SystemExit):
        cli.main(["--log-format", "xml", "health"])
    assert "invalid choice: 'xml'" in capsys.readouterr().err
