"""Shared fixtures: keys, a real gRPC server on loopback, and backend selection.

Backend-specific fixtures live in tests/support/fixtures_<backend>.py. Each provides a
`<backend>_signer` fixture: a `WalletSigner` on a fresh key of that backend. The contract
tests run on every backend through `any_signer`. A backend whose dependencies are missing is
skipped, unless WALLET_SIGNER_REQUIRE_BACKENDS names it (make test sets it), when the skip
becomes a failure.
"""

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from eth_account import Account
from hypothesis import HealthCheck, settings

from signer.app.access import AccessControl
from signer.app.application import Application
from signer.backends.env import EnvBackend, parse_private_key
from signer.config import Config, ServerConfig, StoreConfig
from signer.grpc.server import SignerServer
from signer.jsonrpc.config import JsonRpcConfig
from signer.runtime import Runtime
from signer.service import KeyRing
from signer.store import Store, open_store
from signer.v1 import signer_pb2_grpc as pb_grpc
from signer.wallet import WalletSigner

pytest_plugins = [
    "tests.support.fixtures_pkcs11",
    "tests.support.fixtures_kms",
    "tests.support.fixtures_postgres",
    "tests.support.fixtures_sources",
    "tests.support.policy_service",
]

# Property tests talk to real servers: timing varies with the machine's load, and CI (CI=true)
# replays the same examples every run so that main stays reproducibly green.
settings.register_profile(
    "wallet-signer",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=bool(os.environ.get("CI")),
)
settings.load_profile("wallet-signer")

BACKENDS = ("env", "pkcs11", "kms", "keystore", "vault", "aws_secret")
# Shared-state stores every store test runs on: each has a `<name>_store_url` fixture.
STORES = ("sqlite", "postgres")
REQUIRED_BACKENDS = {
    b.strip() for b in os.environ.get("WALLET_SIGNER_REQUIRE_BACKENDS", "").split(",") if b.strip()
}

# Well-known test keys (never funded anywhere that matters).
EIP155_KEY = "0x" + "46" * 32


def skip_or_fail(backend: str, reason: str) -> None:
    """Skip a test for a missing backend, or fail when CI requires that backend."""
    if backend in REQUIRED_BACKENDS:
        pytest.fail(f"{backend} backend required (WALLET_SIGNER_REQUIRE_BACKENDS) but {reason}")
    pytest.skip(reason)


def env_wallet(private_key_hex: str, key_id: str = "hot") -> WalletSigner:
    return WalletSigner(key_id, EnvBackend(parse_private_key(private_key_hex, "test key")))


@pytest.fixture
def env_key() -> str:
    """A fresh random private key as 0x-hex."""
    return "0x" + Account.create().key.hex().removeprefix("0x")


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """A migrated store of each kind in STORES (the store suites run on every one)."""
    url: str = request.getfixturevalue(f"{request.param}_store_url")
    opened = open_store(url)
    opened.migrate()
    yield opened
    opened.close()


@pytest.fixture
def sqlite_store_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'state.db'}"


@pytest.fixture
def postgres_store_url(postgres_db) -> str:  # type: ignore[no-untyped-def]
    return str(postgres_db.url)


@pytest.fixture
def env_signer(env_key: str) -> WalletSigner:
    return env_wallet(env_key)


@pytest.fixture(params=BACKENDS)
def any_signer(request: pytest.FixtureRequest) -> WalletSigner:
    signer: WalletSigner = request.getfixturevalue(f"{request.param}_signer")
    return signer


@dataclass
class RunningServer:
    server: SignerServer
    target: str
    channel: grpc.Channel
    stub: pb_grpc.SignerServiceStub
    runtime: Runtime

    def close(self) -> None:
        self.channel.close()
        self.runtime.close()


# open_app's default state directories: one root for the session, removed when it ends (each
# was left behind in /tmp before: thousands a run).
_STATE_ROOT: Path | None = None


def _state_dir() -> Path:
    global _STATE_ROOT
    if _STATE_ROOT is None:
        _STATE_ROOT = Path(tempfile.mkdtemp(prefix="ws-tests-"))
    return Path(tempfile.mkdtemp(prefix="ws-state-", dir=_STATE_ROOT))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _STATE_ROOT is not None:
        shutil.rmtree(_STATE_ROOT, ignore_errors=True)


def open_app(
    keyring: KeyRing, state_dir: Path | None = None, *, store: Store | None = None,
    **config: object,
) -> Application:
    """The application path over `keyring`, with `store` or a SQLite store in `state_dir` (a
    fresh temporary directory by default), and `config` (e.g. clients=...) on top; opened by
    the service's own Runtime (the caller, or the server it is given to, closes it)."""
    if store is None:
        state_dir = _state_dir() if state_dir is None else state_dir
    runtime = Runtime(Config(store=StoreConfig(url=f"sqlite://{state_dir / 'state.db'}"))
                      if store is None else Config())
    runtime.open_keyring(keyring)
    access = AccessControl(config.pop("clients", {}), config.pop("policies", {}))  # type: ignore[arg-type]
    return runtime.open_application(store=store, access=access, **config)  # type: ignore[arg-type]


def start_server(
    keyring: KeyRing | Application, *, jsonrpc: JsonRpcConfig | None = None,
    **server_options: object,
) -> RunningServer:
    """A real server on 127.0.0.1 with an ephemeral port, self-tested and SERVING, and the
    JSON-RPC door of `jsonrpc` beside it; opened by the service's Runtime
    (`RunningServer.close` closes it all)."""
    config = ServerConfig(listen="127.0.0.1:0", **server_options)  # type: ignore[arg-type]
    runtime = Runtime(Config(server=config, jsonrpc=jsonrpc))
    try:
        runtime.open_application(keyring if isinstance(keyring, Application) else open_app(keyring))
        server = runtime.start().grpc
        server.self_test_and_mark_ready()
    except BaseException:
        runtime.close()
        raise
    target = f"127.0.0.1:{server.port}"
    channel = grpc.insecure_channel(target)
    return RunningServer(server, target, channel, pb_grpc.SignerServiceStub(channel), runtime)


@pytest.fixture
def serve() -> Iterator[object]:
    """serve(keyring) -> RunningServer; every server is stopped at teardown."""
    started: list[RunningServer] = []

    def _serve(keyring: KeyRing, **options: object) -> RunningServer:
        running = start_server(keyring, **options)
        started.append(running)
        return running

    yield _serve
    for running in started:
        running.close()


@pytest.fixture
def env_server(serve, env_signer: WalletSigner) -> RunningServer:  # type: ignore[no-untyped-def]
    """A server with one env key named "hot"."""
    return serve(KeyRing([env_signer]))
