"""A KMS emulator for tests and the benchmark: moto's server in a subprocess, on 127.0.0.1.

Run in its own process so that it does not share a GIL with the server under test. Inside that
process two test-only additions wrap moto:

* `apply_moto_digest_fix`: moto 5.2.5 reads `MessageType` and drops it, hashing a DIGEST message
  again with SHA-256, so its signatures never verify against the digest (and its own `Verify`
  hides it). The fix treats DIGEST messages as prehashed and rejects wrong lengths as AWS does.
  Upstream: https://github.com/getmoto/moto/pull/10202 (open). Remove once moto ships it.
* `FaultInjector`: WSGI middleware in front of moto that can add latency to, or answer with an
  error instead of, matching requests (by operation and key, or globally), and counts requests.
  Controlled over HTTP at `/__faults__` (see `Emulator`).

Usage from Python: `with Emulator.start() as emulator: ...emulator.endpoint_url...`.
"""

import argparse
import io
import json
import os
import selectors
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

CONTROL_PATH = "/__faults__"
REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 30.0


# --- inside the emulator process -------------------------------------------------------------

_prehashed = threading.local()


def apply_moto_digest_fix() -> None:
    """Make moto's Sign/Verify honor MessageType=DIGEST (getmoto/moto PR #10202). Test-only."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
    from moto.kms import responses, utils
    from moto.kms.exceptions import ValidationException

    digests: dict[str, Callable[[], hashes.HashAlgorithm]] = {"ECDSA_SHA_256": hashes.SHA256, "ECDSA_SHA_384": hashes.SHA384,
               "ECDSA_SHA_512": hashes.SHA512}

    def with_message_type(handler: Callable[[Any], str]) -> Callable[[Any], str]:
        def wrapped(self: Any) -> str:
            message_type = self._get_param("MessageType") or "RAW"
            if message_type not in ("RAW", "DIGEST"):
                raise ValidationException(
                    f"1 validation error detected: Value '{message_type}' at 'MessageType' "
                    "failed to satisfy constraint: Member must satisfy enum value set: "
                    "[RAW, DIGEST]"
                )
            _prehashed.active = message_type == "DIGEST"
            try:
                return handler(self)
            finally:
                _prehashed.active = False
        return wrapped

    def prehashed(message: bytes, algorithm: str) -> ec.ECDSA:
        digest = digests[algorithm]()
        if len(message) != digest.digest_size:
            raise ValidationException(f"Digest is invalid length for algorithm {algorithm}.")
        return ec.ECDSA(Prehashed(digest))

    ecdsa_sign, ecdsa_verify = utils.ECDSAPrivateKey.sign, utils.ECDSAPrivateKey.verify

    def sign(self: Any, message: bytes, signing_algorithm: str) -> bytes:
        if not getattr(_prehashed, "active", False):
            return ecdsa_sign(self, message, signing_algorithm)
        utils.validate_signing_algorithm(signing_algorithm, self.valid_signing_algorithms)
        return bytes(self.private_key.sign(message, prehashed(message, signing_algorithm)))

    def verify(self: Any, message: bytes, signature: bytes, signing_algorithm: str) -> bool:
        if not getattr(_prehashed, "active", False):
            return bool(ecdsa_verify(self, message, signature, signing_algorithm))
        utils.validate_signing_algorithm(signing_algorithm, self.valid_signing_algorithms)
        algorithm = prehashed(message, signing_algorithm)
        try:
            self.private_key.public_key().verify(signature, message, algorithm)
        except Exception:  # InvalidSignature, or a malformed DER blob
            return False
        return True

    def refuse_rsa_digest(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(self: Any, *args: Any) -> Any:
            if getattr(_prehashed, "active", False):
                raise ValidationException("test emulator: DIGEST is implemented for ECC keys only")
            return original(self, *args)
        return wrapped

    utils.ECDSAPrivateKey.sign = sign  # type: ignore[method-assign]
    utils.ECDSAPrivateKey.verify = verify  # type: ignore[method-assign]
    utils.RSAPrivateKey.sign = refuse_rsa_digest(utils.RSAPrivateKey.sign)  # type: ignore[method-assign]
    utils.RSAPrivateKey.verify = refuse_rsa_digest(utils.RSAPrivateKey.verify)  # type: ignore[method-assign]
    responses.KmsResponse.sign = with_message_type(  # type: ignore[method-assign,assignment]
        responses.KmsResponse.sign)
    responses.KmsResponse.verify = with_message_type(  # type: ignore[method-assign,assignment]
        responses.KmsResponse.verify)


@dataclass
class Fault:
    """Applies to requests for `operation` ("*": any) whose KeyId (or SecretId) contains `key`
    (None: any)."""

    operation: str = "Sign"
    key: str | None = None
    error: str | None = None  # e.g. "ThrottlingException"; None: forward to moto
    status: int = 400
    message: str = "injected by the test emulator"
    latency: float = 0.0  # seconds added before answering
    times: int | None = None  # how many requests it applies to; None: until cleared

    def matches(self, operation: str, key_id: str) -> bool:
        return (self.operation in ("*", operation)) and (self.key is None or self.key in key_id)


class FaultInjector:
    """WSGI middleware: faults and request counts in front of moto's application."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._counts: Counter[str] = Counter()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") == CONTROL_PATH:
            return self._control(environ, start_response)
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        operation = str(environ.get("HTTP_X_AMZ_TARGET", "")).rpartition(".")[2]
        try:
            request = json.loads(body or b"{}")
            key_id = str(request.get("KeyId") or request.get("SecretId") or "")
        except (ValueError, AttributeError):
            key_id = ""
        fault = self._take(operation, key_id)
        if fault is not None and fault.latency:
            time.sleep(fault.latency)
        if fault is None or fault.error is None:
            return self._app(environ, start_response)
        payload = json.dumps({"__type": fault.error, "message": fault.message}).encode()
        start_response(f"{fault.status} Injected", [
            ("Content-Type", "application/x-amz-json-1.1"),
            ("Content-Length", str(len(payload))),
            ("x-amzn-RequestId", str(uuid.uuid4())),
        ])
        return [payload]

    def _take(self, operation: str, key_id: str) -> Fault | None:
        with self._lock:
            self._counts[f"{operation} {key_id}"] += 1
            for fault in self._faults:
                if fault.matches(operation, key_id) and fault.times != 0:
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _control(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        method = environ["REQUEST_METHOD"]
        with self._lock:
            if method == "POST":
                raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
                self._faults.extend(Fault(**item) for item in json.loads(raw))
            elif method == "DELETE":
                self._faults.clear()
                self._counts.clear()
            payload = json.dumps({"counts": dict(self._counts),
                                  "faults": [asdict(f) for f in self._faults]}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(payload)))])
        return [payload]


def serve(port: int, service: str = "kms") -> None:
    """Run moto with the fix and the fault injector; print the port once listening."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    class QuietHandler(MotoRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    apply_moto_digest_fix()
    # One service per process (KMS, or Secrets Manager for the aws-secret backend): skip moto's
    # per-request service lookup (a third of its CPU time).
    app = FaultInjector(create_backend_app(service))
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=QuietHandler)
    print(f"listening {server.server_port}", flush=True)
    server.serve_forever()


# --- in the test (or benchmark) process -----------------------------------------------------------


@dataclass
class Emulator:
    """A running emulator subprocess and its fault controls."""

    process: subprocess.Popen[str]
    port: int
    endpoint_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.endpoint_url = f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, service: str = "kms") -> "Emulator":
        """Start moto in a subprocess; raises RuntimeError if it is not listening in time."""
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.kms_emulator", "--port", "0", "--service", service],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            ready = selector.select(STARTUP_SECONDS)
        line = process.stdout.readline() if ready else ""
        if not line.startswith("listening "):
            process.kill()
            process.wait()
            raise RuntimeError(f"KMS emulator did not start within {STARTUP_SECONDS}s: {line!r}")
        return cls(process, int(line.split()[1]))

    def add_fault(self, **fault: Any) -> None:
        """e.g. add_fault(key=key_id, error="ThrottlingException"); see `Fault`."""
        self._control("POST", [asdict(Fault(**fault))])

    def clear(self) -> None:
        """Remove every fault and reset the counts."""
        self._control("DELETE", None)

    def count(self, operation: str, key: str | None = None) -> int:
        """Requests seen for `operation` whose KeyId contains `key` (faulted ones included)."""
        counts: dict[str, int] = self._control("GET", None)["counts"]
        total = 0
        for name, n in counts.items():
            op, _, key_id = name.partition(" ")
            if op == operation and (key is None or key in key_id):
                total += n
        return total

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _control(self, method: str, body: Any) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.endpoint_url + CONTROL_PATH, data, method=method)
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())

    def __enter__(self) -> "Emulator":
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


def emulator_environment() -> Iterator[tuple[str, str]]:
    """Dummy credentials, and nothing that could reach real AWS or the metadata service."""
    yield from {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }.items()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--service", default="kms", choices=["kms", "secretsmanager"])
    arguments = parser.parse_args()
    serve(arguments.port, arguments.service)
