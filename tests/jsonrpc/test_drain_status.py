"""`keys drain-status` against a real chain (anvil): the draining version's pending nonce and
balance as the node reports them."""

from pathlib import Path

from eth_account import Account

from signer import cli
from signer import config as config_module
from signer.admin import rotation
from tests.jsonrpc.conftest import Anvil


def test_drain_status_reads_nonce_and_balance_from_the_upstream(
        anvil: Anvil, tmp_path: Path, monkeypatch, capsys):
    old, new = Account.create(), Account.create()
    monkeypatch.setenv("DS_OLD", old.key.hex())
    monkeypatch.setenv("DS_NEW", new.key.hex())
    path = tmp_path / "signer.toml"
    path.write_text(
        f'[store]\nurl = "sqlite://{tmp_path / "state.db"}"\n'
        '[keys.hot]\nbackend = "env"\nprivate_key_env = "DS_OLD"\n'
        '[keys.next]\nbackend = "env"\nprivate_key_env = "DS_NEW"\n'
        f'[jsonrpc]\nlisten = "127.0.0.1:0"\nupstream = "{anvil.url}"\n')
    anvil.fund(old.address, 3 * 10**18)
    rotation.rotate_key(config_module.load(path), "hot", to="next", settle=0)
    capsys.readouterr()
    assert cli.main(["keys", "drain-status", "hot", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"hot@1\t{old.address}\tdraining\t0\t{3 * 10**18}" in out
    assert f"hot@2\t{new.address}\tactive\t-\t-" in out
    assert "no [jsonrpc] upstream" not in out
