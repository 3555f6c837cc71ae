"""Nonces across replicas: two `wallet-signer serve` processes sharing one store (SQLite file,
PostgreSQL), 50 concurrent
nonce-less eth_sendTransaction from one key -> 50 distinct consecutive nonces, all mined."""

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import STORES
from tests.jsonrpc.conftest import Anvil, result, signer_key
from tests.support.serve_process import ServeProcess, start_serve

TO = "0x" + "42" * 20
_JSONRPC_PORT = re.compile(r"jsonrpc listening on \S+ \(port (\d+)")


def serve_with_jsonrpc(workdir: Path, store_url: str, upstream: str, key: str) -> tuple[ServeProcess, str]:
    workdir.mkdir()
    config = workdir / "signer.toml"
    config.write_text(
        '[server]\nlisten = "127.0.0.1:0"\n'
        f'[store]\nurl = "{store_url}"\n'
        '[keys.hot]\nbackend = "env"\nprivate_key_env = "HOT_KEY"\n'
        f'[jsonrpc]\nlisten = "127.0.0.1:0"\nupstream = "{upstream}"\n'
    )
    served = start_serve(workdir, config, {"HOT_KEY": key})
    port = _JSONRPC_PORT.search(served.log())
    assert port, served.log()
    return served, f"http://127.0.0.1:{port.group(1)}"


@pytest.mark.parametrize("store", STORES)
def test_concurrent_sends_through_two_replicas_get_distinct_consecutive_nonces(
        store: str, request: pytest.FixtureRequest, tmp_path: Path, anvil: Anvil):
    key, signer = signer_key()
    anvil.fund(signer.address)
    store_url: str = request.getfixturevalue(f"{store}_store_url")
    replicas = [serve_with_jsonrpc(tmp_path / f"replica{i}", store_url, anvil.url, key)
                for i in range(2)]
    try:
        urls = [url for _, url in replicas]
        with ThreadPoolExecutor(50) as pool:
            hashes = list(pool.map(
                lambda i: result(urls[i % 2], "eth_sendTransaction",
                                 [{"from": signer.address, "to": TO, "value": hex(i + 1)}]),
                range(50)))
        receipts = [anvil.receipt(h, timeout=30) for h in hashes]
        assert all(r["status"] == "0x1" for r in receipts)
        nonces = sorted(int(result(anvil.url, "eth_getTransactionByHash", [h])["nonce"], 16)
                        for h in hashes)
        assert nonces == list(range(50))
        for served, _ in replicas:
            assert "Traceback" not in served.log() and key[2:] not in served.log()
    finally:
        for served, _ in replicas:
            served.proc.terminate()
        for served, _ in replicas:
            served.proc.wait(30)
