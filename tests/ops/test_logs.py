"""Structured logs: one access record per call, in JSON or text, that a caller cannot forge."""

import io
import json
import logging
import os
import select
import shlex
import sys
import threading
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


def _line_handler(stream) -> logs.LineHandler:
    handler = logs.LineHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    return handler


def _log_from_threads(handler: logging.Handler, threads: int, per_thread: int,
                      padding: int) -> None:
    """`threads` threads each emit `per_thread` access records through `handler` at once."""
    logger = logging.Logger("signer.access.linetest", logging.INFO)  # not in the hierarchy
    logger.addHandler(handler)
    start = threading.Barrier(threads)

    def emit(thread: int) -> None:
        start.wait(timeout=10)
        for n in range(per_thread):
            logger.info(logs.Fields("/m", thread=thread, n=n, pad="x" * padding))

    workers = [threading.Thread(target=emit, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
        assert not worker.is_alive()


def _whole_records(text: str, threads: int, per_thread: int, padding: int) -> None:
    entries = [json.loads(line) for line in text.splitlines()]  # a torn line would not parse
    assert sorted((e["thread"], e["n"]) for e in entries) == [
        (t, n) for t in range(threads) for n in range(per_thread)]
    assert all(e["pad"] == "x" * padding for e in entries)


def test_line_handler_keeps_concurrent_lines_whole_in_a_file(tmp_path):
    """Without the handler's lock, lines written at once by many threads to a file (what a
    service's stderr usually is under a supervisor) neither tear nor get lost."""
    path = tmp_path / "serve.log"
    with path.open("w", encoding="utf-8") as stream:
        _log_from_threads(_line_handler(stream), threads=8, per_thread=300, padding=300)
    _whole_records(path.read_text(encoding="utf-8"), 8, 300, 300)


@pytest.mark.parametrize("padding", [200, 3 * select.PIPE_BUF])  # one write; then the lock
def test_line_handler_keeps_concurrent_lines_whole_in_a_pipe(padding):
    """To a pipe (a container's log collector), records up to PIPE_BUF go out as one atomic
    write; longer ones (tracebacks) take the lock, so they do not interleave either."""
    read_fd, write_fd = os.pipe()
    chunks: list[bytes] = []

    def drain() -> None:
        while data := os.read(read_fd, 1 << 16):
            chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        with open(write_fd, "w", encoding="utf-8", closefd=True) as stream:
            _log_from_threads(_line_handler(stream), threads=6, per_thread=60, padding=padding)
    finally:
        reader.join(timeout=30)
        os.close(read_fd)
    _whole_records(b"".join(chunks).decode("utf-8"), 6, 60, padding)


def test_line_handler_without_a_file_descriptor_and_with_filters():
    """A stream with no descriptor (a test's buffer) is written as StreamHandler writes it;
    filters apply on both paths, and text that is not UTF-8-clean is escaped, not dropped."""
    buffer = io.StringIO()
    handler = _line_handler(buffer)
    handler.addFilter(lambda record: "secret" not in record.getMessage())
    logger = logging.Logger("signer.linetest", logging.INFO)
    logger.addHandler(handler)
    logger.info("kept")
    logger.info("a secret")
    assert [json.loads(line)["message"] for line in buffer.getvalue().splitlines()] == ["kept"]

    read_fd, write_fd = os.pipe()
    with open(write_fd, "w", encoding="utf-8", closefd=True) as stream:
        handler = _line_handler(stream)
        handler.addFilter(lambda record: "secret" not in record.getMessage())
        logger.handlers[:] = [handler]
        logger.info("kept \udcff")  # a lone surrogate (undecodable bytes from a caller)
        logger.info("a secret")
    with os.fdopen(read_fd, "rb") as out:
        lines = out.read().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["message"] == "kept \udcff"  # json escapes it, still one record


def test_configure_installs_the_line_handler(monkeypatch, tmp_path):
    path = tmp_path / "stderr"
    with path.open("w", encoding="utf-8") as stream, fresh_root_logger(monkeypatch) as root:
        monkeypatch.setattr(sys, "stderr", stream)
        logs.configure(None, "INFO")
        assert [type(h) for h in root.handlers] == [logs.LineHandler]
        logging.getLogger("signer.test").info("hello %s", "file")
    assert json.loads(path.read_text(encoding="utf-8"))["message"] == "hello file"
