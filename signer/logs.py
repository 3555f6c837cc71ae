"""Logging set-up: one JSON object a line (the default when stderr is not a TTY), or text.

Records that describe something (the access line: one per call) carry their values as `Fields`:
in JSON they become top-level keys, in text `key=value` pairs in logfmt style where a value with
a space, quote, `=` or backslash is quoted and escaped. Either way a caller-supplied value (a
request id) stays one value and cannot forge another field. Secrets are never logged.
"""

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Literal

LogFormat = Literal["json", "text"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Fields:
    """A log message made of a short text and named values; rendered only when emitted."""

    __slots__ = ("fields", "text")

    def __init__(self, text: str, **fields: object) -> None:
        self.text = text
        self.fields = fields

    def __str__(self) -> str:
        return " ".join([self.text, *(f"{k}={_logfmt(v)}" for k, v in self.fields.items())])


# Printable ASCII except space, quote, `=` and backslash: written as is; anything else quoted.
_PLAIN = re.compile(r'[!#-<>-\[\]-~]+')


def _logfmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    text = value if isinstance(value, str) else str(value)
    if _PLAIN.fullmatch(text):
        return text
    return json.dumps(text) if text else '""'  # quoted; quotes, backslashes, controls escaped


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", ...fields, "exception"}`, one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        if isinstance(record.msg, Fields) and not record.args:
            entry["message"] = record.msg.text
            for key, value in record.msg.fields.items():
                entry.setdefault(key, value)  # never overwrite the record's own keys
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def default_format() -> LogFormat:
    """JSON for log collectors; text for a person at a terminal."""
    return "text" if sys.stderr.isatty() else "json"


# Libraries whose DEBUG records carry request and response bodies (botocore logs a Secrets
# Manager secret's value and the new key of a PutSecretValue): never below INFO, whatever
# --log-level says.
BODY_LOGGING_LIBRARIES = ("botocore", "boto3", "hvac")


def configure(log_format: LogFormat | None, level: str) -> None:
    """Send every log record to stderr in `log_format` (None: `default_format()`). Like
    logging.basicConfig, does nothing when the root logger has handlers already (a program
    embedding the CLI, a test runner)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    fmt = log_format or default_format()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level))
    for name in BODY_LOGGING_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    # Neither format shows where a call was made from, nor thread or process: skip collecting
    # them for every record (the logging HOWTO's "Optimization" section; ~25% of an access
    # record's cost).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
