"""Real Ethereum tools for the JSON-RPC door: anvil as the upstream node; cast, ethers and viem
as callers. The npm packages (pinned in node/package-lock.json) are installed once with
`npm install` (locked, pinned versions) into tests/jsonrpc/node/node_modules; they ship the foundry binaries."""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from signer.app.application import Application
from signer.backends.env import EnvBackend, parse_private_key
from signer.jsonrpc.config import JsonRpcConfig
from signer.jsonrpc.server import JsonRpcListener
from signer.service import KeyRing
from signer.wallet import WalletSigner
from tests.conftest import RunningServer, open_app, skip_or_fail, start_server

NODE_DIR = Path(__file__).parent / "node"
ANVIL_DEV_KEYS_HINT = "test test test test test test test test test test test junk"


def _npm_ci() -> None:
    if (NODE_DIR / "node_modules" / ".package-lock.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        skip_or_fail("jsonrpc", "npm is not installed (Node 20 and npm run the real clients)")
    # `npm install`, not `npm ci`: npm's lock check stumbles on @foundry-rs's per-platform
    # optional packages (other platforms' entries are "missing" from any lock made on Linux),
    # while install takes the locked, pinned versions as they are.
    done = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                          capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise AssertionError(f"npm install in {NODE_DIR} failed:\n{done.stderr[-4000:]}")


def _binary(tool: str) -> Path:
    matches = sorted((NODE_DIR / "node_modules" / "@foundry-rs").glob(f"{tool}-linux-*/bin/{tool}"))
    if not matches:
        raise AssertionError(f"no {tool} binary in the @foundry-rs/{tool} platform package")
    return matches[0]


@dataclass(frozen=True)
class Tools:
    anvil: Path
    cast: Path
    node: str
    node_dir: Path


@pytest.fixture(scope="session")
def tools() -> Tools:
    node = shutil.which("node")
    if node is None:
        skip_or_fail("jsonrpc", "node is not installed (Node 20 and npm run the real clients)")
    _npm_ci()
    return Tools(_binary("anvil"), _binary("cast"), node, NODE_DIR)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rpc(url: str, method: str, params: list[Any] | None = None, timeout: float = 30) -> Any:
    """One JSON-RPC call; returns the whole response object."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    return post(url, body.encode(), timeout)[1]


def post(url: str, body: bytes, timeout: float = 30,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json",
                                                 **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read()
            return response.status, json.loads(data) if data else None
    except urllib.error.HTTPError as exc:
        data = exc.read()
        return exc.code, json.loads(data) if data else None


def result(url: str, method: str, params: list[Any] | None = None) -> Any:
    reply = rpc(url, method, params)
    assert "error" not in reply, reply
    return reply["result"]


@dataclass
class Anvil:
    url: str
    proc: subprocess.Popen[bytes]
    chain_id: int

    def fund(self, address: str, wei: int = 10**21) -> None:
        result(self.url, "anvil_setBalance", [address, hex(wei)])

    def receipt(self, tx_hash: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            receipt = result(self.url, "eth_getTransactionReceipt", [tx_hash])
            if receipt:
                return dict(receipt)
            time.sleep(0.05)
        raise AssertionError(f"{tx_hash} not mined within {timeout} s")

    def pending_pool_empty(self) -> bool:
        status = result(self.url, "txpool_status")
        return int(status["pending"], 16) == 0 and int(status["queued"], 16) == 0


@contextlib.contextmanager
def running_anvil(tools: Tools, *options: str) -> Iterator[Anvil]:
    """anvil on a free loopback port with `options` (e.g. "--hardfork", "prague")."""
    port = free_port()
    proc = subprocess.Popen(
        [str(tools.anvil), "--host", "127.0.0.1", "--port", str(port), "--silent", *options],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            chain_id = int(result(url, "eth_chainId"), 16)
            break
        except (OSError, urllib.error.URLError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"anvil {' '.join(options)} did not start") from None
            time.sleep(0.05)
    try:
        yield Anvil(url, proc, chain_id)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def anvil(tools: Tools) -> Iterator[Anvil]:
    with running_anvil(tools) as node:
        yield node


@dataclass
class Door:
    """A JSON-RPC listener and a gRPC server over one application, one fresh funded key."""

    url: str
    key: str  # the private key, 0x-hex (only the test knows it)
    address: str
    app: Application
    listener: JsonRpcListener
    grpc: RunningServer


def signer_key() -> tuple[str, WalletSigner]:
    key = "0x" + Account.create().key.hex().removeprefix("0x")
    return key, WalletSigner("hot", EnvBackend(parse_private_key(key, "test key")))


@pytest.fixture
def door_factory(anvil: Anvil, tmp_path: Path) -> Iterator[Any]:
    started: list[Door] = []

    def make(upstream: str | None = "anvil", fund: bool = True, **options: Any) -> Door:
        key, signer = signer_key()
        app = open_app(KeyRing([signer]), tmp_path / f"state{len(started)}")
        config = JsonRpcConfig(
            listen="127.0.0.1:0",
            upstream=anvil.url if upstream == "anvil" else upstream,
            upstream_timeout_seconds=5,
            **options,
        )
        grpc_server = start_server(app, jsonrpc=config)
        listener = grpc_server.runtime.jsonrpc
        assert listener is not None
        door = Door(f"http://127.0.0.1:{listener.port}", key, signer.address, app, listener,
                    grpc_server)
        started.append(door)
        if fund:
            anvil.fund(signer.address)
        return door

    yield make
    for door in started:
        door.grpc.close()


@pytest.fixture
def door(door_factory: Any) -> Door:
    made: Door = door_factory()
    return made


def run_node(tools: Tools, script: str, *args: str, timeout: float = 60) -> Any:
    """Run tests/jsonrpc/node/<script> with args; its stdout is one JSON document."""
    done = subprocess.run(
        [tools.node, str(tools.node_dir / script), *args], capture_output=True, text=True,
        timeout=timeout, cwd=tools.node_dir, env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)
