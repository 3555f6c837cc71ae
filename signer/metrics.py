"""Prometheus metrics, served on their own HTTP listener (`[metrics] listen`).

Every door (gRPC, JSON-RPC) and the application path report through the functions here, so the
metric names and their label values are defined once. Label values are bounded: key ids only
from the configuration (anything else a caller sends is recorded as `UNKNOWN_KEY`), method names
only from the ones a door registered from its service descriptor, status names from a fixed
enum, error kinds from the service's own error classes. Nothing here ever sees a payload, a
signature or a secret.

The metrics live in prometheus-client's default registry, which also carries its process
collectors (CPU, memory, open fds, start time) and the Python GC and platform collectors.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from signer.listen import split_listen

log = logging.getLogger(__name__)

# Not a valid key id (those start with a letter or digit): cannot collide with a configured key.
UNKNOWN_KEY = "(unknown)"
OTHER_METHOD = "(other)"
UNEXPECTED_ERROR = "Unexpected"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0, 30.0)

REQUESTS = Counter(
    "wallet_signer_requests", "Calls answered, by method, final status, key and client",
    ["method", "status", "key_id", "client"],
)
STREAM_MESSAGES = Counter(
    "wallet_signer_stream_messages", "Messages of a stream answered, by method, own status and key",
    ["method", "status", "key_id"],
)
REQUEST_SECONDS = Histogram(
    "wallet_signer_request_duration_seconds", "Whole-call latency as the server sees it",
    ["method", "key_id"], buckets=_LATENCY_BUCKETS,
)
BACKEND_SIGN_SECONDS = Histogram(
    "wallet_signer_backend_sign_duration_seconds",
    "Latency of the backend's sign_digest alone (HSM session wait and KMS retries included)",
    ["key_id", "backend"], buckets=_LATENCY_BUCKETS,
)
BACKEND_ERRORS = Counter(
    "wallet_signer_backend_errors", "Backend sign failures by kind (the service's error class)",
    ["key_id", "backend", "kind"],
)
POLICY_DECISIONS = Counter(
    "wallet_signer_policy_decisions_total",
    "Signing-policy decisions by client, policy and outcome (allow, deny, budget).",
    ["client", "policy", "decision"],
)
BUDGET_SPENT = Gauge(
    "wallet_signer_budget_spent_ratio",
    "Share of each budget's limit spent in its window, as of the last reservation.",
    ["client", "budget"],
)
SIGNER_FAULTS = Counter(
    "wallet_signer_signer_faults",
    "Requests answered 'signer fault' (an unexpected exception: a bug, never the caller's "
    "input), by door",
    ["door"],
)
HTTP_REFUSALS = Counter(
    "wallet_signer_http_refusals",
    "Requests an HTTP door refused before JSON-RPC (400, 401, 403, 408, 411, 413, 431...), by "
    "door and HTTP status",
    ["door", "status"],
)
KMS_RETRIES = Counter(
    "wallet_signer_kms_retries", "KMS Sign attempts beyond the first (botocore retries)",
    ["key_id"],
)
HSM_SESSIONS = Gauge("wallet_signer_hsm_sessions", "PKCS#11 session pool size", ["key_id"])
HSM_SESSIONS_IN_USE = Gauge(
    "wallet_signer_hsm_sessions_in_use", "PKCS#11 sessions taken by a signing call", ["key_id"]
)
HSM_SESSION_WAITERS = Gauge(
    "wallet_signer_hsm_session_waiters", "Signing calls waiting for a free PKCS#11 session",
    ["key_id"],
)
CALLS_IN_FLIGHT = Gauge("wallet_signer_calls_in_flight", "Calls being handled right now")
CALLS_QUEUED = Gauge(
    "wallet_signer_calls_queued", "Calls accepted by the transport, waiting for a worker thread"
)
WORKERS = Gauge("wallet_signer_server_workers", "server.max_workers")
MAX_CONCURRENT_CALLS = Gauge(
    "wallet_signer_server_max_concurrent_calls",
    "server.max_concurrent_calls: calls beyond it are refused with RESOURCE_EXHAUSTED",
)
KEY_SERVING = Gauge(
    "wallet_signer_key_serving", "1 if the key's last backend signature (call or self-test) "
    "succeeded, 0 if it failed or the key has not passed its start-up self-test", ["key_id"],
)

AUDIT_RECORDS = Counter(
    "wallet_signer_audit_records", "Audit records committed (every kind, this process's chain)",
)
AUDIT_COMMITS = Counter(
    "wallet_signer_audit_commits",
    "Audit group commits: one transaction for the records (and budget operations) of every "
    "caller queued at the time",
)
AUDIT_FLUSHES = Counter(
    "wallet_signer_audit_flushes",
    "Audit commits that waited for the disk (SQLite synchronous=FULL, PostgreSQL "
    "synchronous_commit=on); intent-only commits do not. Per signature this falls well below "
    "one under concurrency (group commit)",
)


def audit_committed(records: int, flushed: bool) -> None:
    """One audit group commit of `records` records landed (flushed to disk or not)."""
    AUDIT_RECORDS.inc(records)
    AUDIT_COMMITS.inc()
    if flushed:
        AUDIT_FLUSHES.inc()


_known_keys: frozenset[str] = frozenset()
_known_methods: frozenset[str] = frozenset()
_register_lock = threading.Lock()


def register_keys(key_ids: Iterable[str]) -> None:
    """Key ids from the configuration: the only key_id label values besides UNKNOWN_KEY."""
    global _known_keys
    with _register_lock:
        _known_keys = _known_keys | frozenset(key_ids)


def register_methods(methods: Iterable[str]) -> None:
    """Method names a door serves (from its service descriptor)."""
    global _known_methods
    with _register_lock:
        _known_methods = _known_methods | frozenset(methods)


def key_label(key_id: str) -> str:
    """A caller-supplied key id as a label value: configured ids as they are, "" as "", any
    other string as UNKNOWN_KEY (a caller must not be able to create time series)."""
    return key_id if not key_id or key_id in _known_keys else UNKNOWN_KEY


def method_label(method: str) -> str:
    return method if method in _known_methods else OTHER_METHOD


# --- one call ------------------------------------------------------------------------------------

@dataclass(slots=True)
class Call:
    """What the access log and the request metrics record about the call being handled.

    A door opens it; the application path may fill `key_id` and `client` once it knows them
    (`annotate_call`), e.g. the client identity resolved from a certificate.
    """

    method: str
    key_id: str = ""
    client: str = ""


_current_call: ContextVar[Call | None] = ContextVar("wallet_signer_call", default=None)


def annotate_call(*, key_id: str | None = None, client: str | None = None) -> None:
    """Set the key (a configured key id) or client identity of the call being handled; no-op
    outside a call. Client identities must come from the configuration (bounded)."""
    call = _current_call.get()
    if call is None:
        return
    if key_id is not None:
        call.key_id = key_label(key_id)
    if client is not None:
        call.client = client


def begin_call(method: str, key_id: str) -> tuple[Call, Any]:
    """Open the record of a call (its labels bounded); returns it and a token for `end_call`."""
    call = Call(method_label(method), key_label(key_id))
    CALLS_IN_FLIGHT.inc()
    return call, _current_call.set(call)


def end_call(call: Call, token: Any, status: str, seconds: float) -> None:
    _current_call.reset(token)
    CALLS_IN_FLIGHT.dec()
    labels = (call.method, status, call.key_id, call.client)
    children = _request_children.get(labels)
    if children is None:  # labels() validates and locks: look each series up once
        children = _request_children[labels] = (
            REQUESTS.labels(*labels), REQUEST_SECONDS.labels(call.method, call.key_id)
        )
    children[0].inc()
    children[1].observe(seconds)


def refused_call(method: str, status: str, seconds: float) -> None:
    """A call a door refused before any handler ran (unauthenticated, oversized, malformed)."""
    end_call(*begin_call(method, ""), status, seconds)


# Bounded like the label values themselves.
_request_children: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}


def stream_message(method: str, status: str, key_id: str) -> None:
    """One message of a stream answered (the stream itself is counted by end_call)."""
    labels = (method_label(method), status, key_label(key_id))
    child = _stream_children.get(labels)
    if child is None:  # as in end_call: each series looked up once
        child = _stream_children[labels] = STREAM_MESSAGES.labels(*labels)
    child.inc()


_stream_children: dict[tuple[str, str, str], Any] = {}


# --- backends ------------------------------------------------------------------------------------

def backend_signed(key_id: str, backend: str, seconds: float) -> None:
    BACKEND_SIGN_SECONDS.labels(key_id, backend).observe(seconds)


def backend_failed(key_id: str, backend: str, kind: str, seconds: float) -> None:
    """`kind`: the service error's class name, or UNEXPECTED_ERROR."""
    BACKEND_SIGN_SECONDS.labels(key_id, backend).observe(seconds)
    BACKEND_ERRORS.labels(key_id, backend, kind).inc()


def key_serving(key_id: str, serving: bool) -> None:
    KEY_SERVING.labels(key_id).set(1 if serving else 0)


def server_limits(workers: int, max_concurrent_calls: int) -> None:
    WORKERS.set(workers)
    MAX_CONCURRENT_CALLS.set(max_concurrent_calls)


class QueueCountingExecutor(ThreadPoolExecutor):
    """A ThreadPoolExecutor that counts submitted work not yet started (CALLS_QUEUED)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        CALLS_QUEUED.inc()

        def started(*a: Any, **kw: Any) -> Any:
            CALLS_QUEUED.dec()
            return fn(*a, **kw)

        try:
            return super().submit(started, *args, **kwargs)
        except BaseException:
            CALLS_QUEUED.dec()
            raise


# --- the HTTP listener ---------------------------------------------------------------------------

class MetricsListener:
    """prometheus-client's HTTP exposition server on `listen` (HOST:PORT; port 0 picks one)."""

    def __init__(self, listen: str) -> None:
        host, port = split_listen(listen)
        self._server, self._thread = start_http_server(port, host)
        self.port: int = self._server.server_port
        log.info("metrics on http://%s:%d/metrics", listen.rsplit(":", 1)[0], self.port)

    def close(self, timeout: float = 2.0) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)
