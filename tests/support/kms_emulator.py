"""A KMS emulator for tests and the benchmark: moto's server in a subprocess, on 127.0.0.1.

Run in its own process so that it does not share a GIL with the server under test. Inside that
process two test-only additions wrap moto:

* `apply_moto_digest_fix`: moto 5.2.5 reads `MessageType` and drops it, hashing a DIGEST message
  again with SHA-256, so its signatures never verify against the digest (and its own `Verify`
  hides it). The fix treats DIGEST messages as prehashed and rejects wrong lengths as AWS does.
  Upstream: https://github.com/getmoto/moto/pull/10202 (open). Remove once moto ships it.
* `apply_key_import`: moto 5.2.5 has no GetParametersForImport or ImportKeyMaterial and gives
  an `Origin=EXTERNAL` key generated key material at once. This adds both calls for ECC keys as
  AWS's KMS API reference documents them (see the function). It is the project's reading of
  those docs, not AWS: `keys import --backend kms` has been run against it, not against AWS.
* `FaultInjector`: WSGI middleware in front of moto that can add latency to, or answer with an
  error instead of, matching requests (by operation and key, or globally), and counts requests.
  Controlled over HTTP at `/__faults__` (see `Emulator`).

Usage from Python: `with Emulator.start() as emulator: ...emulator.endpoint_url...`.
"""

import argparse
import base64
import hashlib
import io
import json
import os
import re
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


# Import of key material, after AWS's KMS API reference (GetParametersForImport,
# ImportKeyMaterial) and developer guide ("Importing key material"). Only what the docs state
# for asymmetric ECC keys; the emulator's own limits say "test emulator" in their message.
IMPORT_TOKEN_SECONDS = 24 * 3600.0  # "Each public key and import token set is valid for 24 hours"
_WRAPPING_KEY_BITS = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}
# AlgorithmSpec values usable for ECC key material (RSAES_PKCS1_V1_5: withdrawn by AWS on
# 2023-10-10; SM2PKE: China regions only) -> the hash of their RSA-OAEP step
_WRAPPING_HASHES = {"RSAES_OAEP_SHA_1": "SHA1", "RSAES_OAEP_SHA_256": "SHA256",
                    "RSA_AES_KEY_WRAP_SHA_1": "SHA1", "RSA_AES_KEY_WRAP_SHA_256": "SHA256"}
_CURVES = {"ECC_NIST_P256": "secp256r1", "ECC_SECG_P256K1": "secp256k1",
           "ECC_NIST_P384": "secp384r1", "ECC_NIST_P521": "secp521r1"}
_IMPORT_STATES = ("Enabled", "Disabled", "PendingImport")  # AWS's key-state table


@dataclass
class _ImportParameters:
    """What an import token stands for: one key, one wrapping algorithm, one RSA key pair."""

    key_id: str
    algorithm: str
    wrapping_key: Any  # rsa.RSAPrivateKey
    valid_to: float


def apply_key_import(token_seconds: float = IMPORT_TOKEN_SECONDS) -> None:
    """Add GetParametersForImport and ImportKeyMaterial to moto's KMS, for ECC keys. Test-only.

    - CreateKey with `Origin=EXTERNAL` makes a key with no key material: `KeyState`
      `PendingImport`, `Enabled` false; Sign, Verify, GetPublicKey, EnableKey and DisableKey
      on it fail with KMSInvalidStateException.
    - GetParametersForImport (key ID or ARN; EXTERNAL origin, else
      UnsupportedOperationException; state Enabled, Disabled or PendingImport, else
      KMSInvalidStateException) returns a fresh RSA wrapping public key (`WrappingKeySpec`
      RSA_2048/3072/4096, DER SubjectPublicKeyInfo) and an opaque import token bound to that key,
      that algorithm and that RSA key pair, valid `token_seconds` (24 h, as AWS).
    - ImportKeyMaterial checks the token (unknown or another key's: InvalidImportTokenException;
      expired: ExpiredImportTokenException), the expiration model (ValidTo required exactly with
      KEY_MATERIAL_EXPIRES, the default: ValidationException), unwraps with the token's private
      key (RSAES_OAEP_SHA_1/256, or RSA_AES_KEY_WRAP_SHA_1/256: RSA-OAEP of an AES-256 key, then
      RFC 5649 key wrap with padding; failure: InvalidCiphertextException), requires a DER PKCS#8
      private key on the key spec's curve (else IncorrectKeyMaterialException), and for a key
      that already holds material only that same material (an asymmetric key's material cannot
      change). Then Sign and GetPublicKey use it and the key is Enabled.
    Not emulated: expiry of the material at ValidTo, DeleteImportedKeyMaterial, symmetric, HMAC
    and RSA key material (UnsupportedOperationException naming the emulator).
    """
    from cryptography.hazmat.primitives import hashes, keywrap, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from moto.core.exceptions import JsonRESTError
    from moto.kms import models, responses, utils
    from moto.kms.exceptions import ValidationException

    tokens: dict[bytes, _ImportParameters] = {}
    lock = threading.Lock()

    def check_target(key: Any) -> None:
        if key.origin != "EXTERNAL":
            raise JsonRESTError("UnsupportedOperationException",
                         f"{key.arn} origin is {key.origin} which is invalid for this operation.")
        if key.key_state not in _IMPORT_STATES:
            state = " ".join(re.findall("[A-Z][a-z]*", key.key_state)).lower()
            raise JsonRESTError("KMSInvalidStateException", f"{key.arn} is {state}.")
        if key.key_spec not in _CURVES:
            raise JsonRESTError("UnsupportedOperationException",
                         f"test emulator: key material import is implemented for ECC keys only, "
                         f"not {key.key_spec}")

    def oaep(algorithm: str) -> padding.OAEP:
        digest = getattr(hashes, _WRAPPING_HASHES[algorithm])()
        return padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)

    def get_parameters_for_import(self: Any) -> str:
        key_id, algorithm = self._get_param("KeyId"), self._get_param("WrappingAlgorithm")
        spec = self._get_param("WrappingKeySpec")
        self._validate_cmk_id(key_id)
        key = self.kms_backend.describe_key(key_id)
        check_target(key)
        if spec not in _WRAPPING_KEY_BITS:
            raise ValidationException(f"1 validation error detected: Value '{spec}' at "
                                      "'wrappingKeySpec' failed to satisfy constraint: Member "
                                      f"must satisfy enum value set: {list(_WRAPPING_KEY_BITS)}")
        if algorithm not in _WRAPPING_HASHES:
            raise JsonRESTError("UnsupportedOperationException",
                         f"{algorithm} is not a supported wrapping algorithm for {key.key_spec} "
                         f"key material; use one of {list(_WRAPPING_HASHES)}")
        wrapping = rsa.generate_private_key(65537, _WRAPPING_KEY_BITS[spec])
        token = os.urandom(64)
        valid_to = time.time() + token_seconds
        with lock:
            tokens[token] = _ImportParameters(key.id, algorithm, wrapping, valid_to)
        public = wrapping.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return json.dumps({"KeyId": key.arn, "ImportToken": base64.b64encode(token).decode(),
                           "PublicKey": base64.b64encode(public).decode(),
                           "ParametersValidTo": valid_to})

    def unwrap(parameters: _ImportParameters, wrapped: bytes) -> bytes:
        private = parameters.wrapping_key
        try:
            if parameters.algorithm.startswith("RSAES_OAEP"):
                return bytes(private.decrypt(wrapped, oaep(parameters.algorithm)))
            size = private.key_size // 8
            aes_key = private.decrypt(wrapped[:size], oaep(parameters.algorithm))
            if len(aes_key) != 32:
                raise ValueError("the wrapped AES key is not 256 bits")
            return keywrap.aes_key_unwrap_with_padding(aes_key, wrapped[size:])
        except (ValueError, keywrap.InvalidUnwrap):
            raise JsonRESTError("InvalidCiphertextException", "The request was rejected because KMS "
                         "could not decrypt the encrypted (wrapped) key material.") from None

    def private_key(material: bytes, key_spec: str) -> ec.EllipticCurvePrivateKey:
        if not _is_pkcs8(material):
            raise JsonRESTError("IncorrectKeyMaterialException",
                         "The key material is not a DER-encoded PKCS #8 private key.")
        try:
            loaded = serialization.load_der_private_key(material, password=None)
        except (ValueError, TypeError):
            loaded = None
        if not isinstance(loaded, ec.EllipticCurvePrivateKey) or (
                loaded.curve.name != _CURVES[key_spec]):
            raise JsonRESTError("IncorrectKeyMaterialException",
                         f"The key material is not a {key_spec} private key.")
        return loaded

    def import_key_material(self: Any) -> str:
        key_id = self._get_param("KeyId")
        self._validate_cmk_id(key_id)
        key = self.kms_backend.describe_key(key_id)
        check_target(key)
        model = self._get_param("ExpirationModel") or "KEY_MATERIAL_EXPIRES"
        valid_to = self._get_param("ValidTo")
        if (model == "KEY_MATERIAL_EXPIRES") != (valid_to is not None):
            raise ValidationException("ValidTo is required when ExpirationModel is "
                                      "KEY_MATERIAL_EXPIRES, and not allowed otherwise")
        if valid_to is not None and not time.time() < float(valid_to) <= time.time() + 365 * 86400:
            raise ValidationException("ValidTo must be in the future and at most 365 days away")
        with lock:
            parameters = tokens.get(base64.b64decode(self._get_param("ImportToken") or ""))
        if parameters is None or parameters.key_id != key.id:
            raise JsonRESTError("InvalidImportTokenException", "Import token is invalid or is "
                         f"associated with a different KMS key than {key.arn}.")
        if time.time() > parameters.valid_to:
            raise JsonRESTError("ExpiredImportTokenException", "The import token has expired; call "
                         "GetParametersForImport again.")
        material = unwrap(parameters, base64.b64decode(self._get_param("EncryptedKeyMaterial")))
        loaded = private_key(material, key.key_spec)
        value = loaded.private_numbers().private_value
        if getattr(key, "imported_private_value", value) != value:
            raise JsonRESTError("IncorrectKeyMaterialException", f"{key.arn} already holds other key "
                         "material; an asymmetric key's key material cannot change.")
        installed = utils.ECDSAPrivateKey(key.key_spec)
        installed.private_key = loaded
        key.private_key, key.imported_private_value = installed, value
        key.expiration_model, key.valid_to = model, valid_to
        if key.key_state == "PendingImport":
            key.key_state, key.enabled = "Enabled", True
        material_id = hashlib.sha256(key.arn.encode() + material).hexdigest()
        return json.dumps({"KeyId": key.arn, "KeyMaterialId": material_id})

    original_create = models.KmsBackend.create_key

    def create_key(self: Any, *args: Any, **kwargs: Any) -> Any:
        key: Any = original_create(self, *args, **kwargs)
        if key.origin == "EXTERNAL":  # "creates a KMS key with no key material"
            key.key_state, key.enabled, key.private_key = "PendingImport", False, None
        return key

    def refuse_pending_import(method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(self: Any, key_id: str, *args: Any, **kwargs: Any) -> Any:
            key = self.describe_key(key_id)
            if key.key_state == "PendingImport":
                raise JsonRESTError("KMSInvalidStateException", f"{key.arn} is pending import.")
            return method(self, key_id, *args, **kwargs)
        return wrapped

    original_to_dict = models.Key.to_dict

    def to_dict(self: Any) -> dict[str, Any]:
        described: dict[str, Any] = original_to_dict(self)
        if self.origin == "EXTERNAL" and hasattr(self, "imported_private_value"):
            described["KeyMetadata"]["ExpirationModel"] = self.expiration_model
            if self.valid_to is not None:
                described["KeyMetadata"]["ValidTo"] = self.valid_to
        return described

    models.KmsBackend.create_key = create_key  # type: ignore[method-assign]
    for name in ("sign", "verify", "get_public_key", "enable_key", "disable_key"):
        setattr(models.KmsBackend, name, refuse_pending_import(getattr(models.KmsBackend, name)))
    models.Key.to_dict = to_dict  # type: ignore[method-assign]
    responses.KmsResponse.get_parameters_for_import = get_parameters_for_import  # type: ignore[attr-defined]
    responses.KmsResponse.import_key_material = import_key_material  # type: ignore[attr-defined]


def _is_pkcs8(der: bytes) -> bool:
    """PrivateKeyInfo ::= SEQUENCE { version INTEGER (0 | 1), AlgorithmIdentifier SEQUENCE, ...}
    (SEC1's ECPrivateKey has version 1 then an OCTET STRING: not accepted, as AWS wants PKCS#8)."""
    if len(der) < 2 or der[0] != 0x30:
        return False
    start = 2 + (der[1] & 0x7F if der[1] & 0x80 else 0)
    return der[start:start + 3] in (b"\x02\x01\x00", b"\x02\x01\x01") and der[start + 3:start + 4] == b"\x30"


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


def serve(port: int, service: str = "kms",
          import_token_seconds: float = IMPORT_TOKEN_SECONDS) -> None:
    """Run moto with the fix, key import and the fault injector; print the port once listening."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    class QuietHandler(MotoRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    apply_moto_digest_fix()
    apply_key_import(import_token_seconds)
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
    def start(cls, service: str = "kms",
              import_token_seconds: float = IMPORT_TOKEN_SECONDS) -> "Emulator":
        """Start moto in a subprocess; raises RuntimeError if it is not listening in time.
        `import_token_seconds`: how long import tokens stay valid (AWS: 24 h)."""
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.kms_emulator", "--port", "0", "--service", service,
             "--import-token-seconds", str(import_token_seconds)],
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
    parser.add_argument("--import-token-seconds", type=float, default=IMPORT_TOKEN_SECONDS)
    arguments = parser.parse_args()
    serve(arguments.port, arguments.service, arguments.import_token_seconds)
