"""`wallet-signer serve` as operators run it, in a subprocess: for CLI tests and benchmarks."""

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_LISTENING = re.compile(r"listening on \S+ \(port (\d+)")
_JSONRPC_PORT = re.compile(r"jsonrpc listening on \S+ \(port (\d+)")


@dataclass
class ServeProcess:
    proc: subprocess.Popen[str]
    target: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()


def start_serve(workdir: Path, config: Path, env: dict[str, str], timeout: float = 30,
                module: str = "signer.cli") -> ServeProcess:
    """Start the server with `config` (listen on port 0) and wait until it is SERVING; its log
    (default INFO: one access line a call) goes to workdir/serve.log. `module` is what
    `python -m` runs with `serve --config FILE` (a benchmark's variant of the CLI)."""
    log_path = workdir / "serve.log"
    with log_path.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "serve", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, text=True,
            cwd=workdir,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text()
        port = _LISTENING.search(text)
        if port and "SERVING" in text:
            return ServeProcess(proc, f"127.0.0.1:{port.group(1)}", log_path)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"server did not start:\n{log_path.read_text()}")


def env_config(tmp_path: Path, listen: str = "127.0.0.1:0", extra: str = "") -> Path:
    """A config serving one env key (HOT_WALLET_KEY) as `hot`, its store in tmp_path."""
    path = tmp_path / "signer.toml"
    path.write_text(
        f'{extra}[server]\nlisten = "{listen}"\n[store]\nurl = "sqlite://{tmp_path / "state.db"}"\n'
        '[keys.hot]\nbackend = "env"\nprivate_key_env = "HOT_WALLET_KEY"\n'
    )
    return path


def env_key_config(workdir: Path, jsonrpc: str = "") -> Path:
    """A config with one env key "hot" (from HOT_WALLET_KEY), SQLite in `workdir`, and the
    JSON-RPC door on loopback with `jsonrpc` (e.g. an upstream line) in its table."""
    config = workdir / "signer.toml"
    config.write_text(
        '[server]\nlisten = "127.0.0.1:0"\n'
        f'[store]\nurl = "sqlite://{workdir / "state.db"}"\n'
        '[keys.hot]\nbackend = "env"\nprivate_key_env = "HOT_WALLET_KEY"\n'
        '[jsonrpc]\nlisten = "127.0.0.1:0"\n' + jsonrpc
    )
    return config


def jsonrpc_url(served: ServeProcess) -> str:
    """The JSON-RPC door's URL, from the server's start-up log."""
    port = _JSONRPC_PORT.search(served.log())
    assert port, served.log()
    return f"http://127.0.0.1:{port.group(1)}"


def replica_config(directory: Path, store_url: str, extra: str = "") -> Path:
    """A replica's config in `directory`: one env key "hot" (HOT_WALLET_KEY), the shared store
    at `store_url`, and `extra` (whole tables or [server] lines) before the key."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "signer.toml"
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\n[store]\nurl = "{store_url}"\n{extra}'
        '[keys.hot]\nbackend = "env"\nprivate_key_env = "HOT_WALLET_KEY"\n'
    )
    return path


def stop_serve(served: ServeProcess) -> None:
    """SIGTERM, as operators stop it, and wait for the process (bounded)."""
    if served.proc.poll() is None:
        served.proc.send_signal(signal.SIGTERM)
        served.proc.wait(20)
