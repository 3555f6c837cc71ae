"""`[jsonrpc]` in the one config: defaults, validation naming the field, environment overrides."""

import pytest

from signer import config as config_module
from signer.errors import ConfigError


def load(tmp_path, text: str, environ: dict[str, str] | None = None):
    path = tmp_path / "signer.toml"
    path.write_text(text)
    return config_module.load(path, environ or {})


def test_absent_means_no_door_and_defaults_apply(tmp_path):
    assert load(tmp_path, "").jsonrpc is None
    door = load(tmp_path, "[jsonrpc]\n").jsonrpc
    assert door is not None and door.listen == "127.0.0.1:9000" and door.upstream is None
    assert door.upstream_timeout_seconds == 10 and door.max_batch_size == 100


@pytest.mark.parametrize(("text", "fragment"), [
    ('[jsonrpc]\nupstream = "ftp://node"\n', "jsonrpc.upstream"),
    ('[jsonrpc]\nupstream = "http://user:pw@node:8545"\n', "credentials in the URL"),
    ('[jsonrpc]\nlisten = "9000"\n', "jsonrpc.listen"),
    ("[jsonrpc]\nupstream_timeout_seconds = 0\n", "jsonrpc.upstream_timeout_seconds"),
    ("[jsonrpc]\nmax_batch_size = 0\n", "jsonrpc.max_batch_size"),
    ("[jsonrpc]\nmax_request_bytes = 10\n", "jsonrpc.max_request_bytes"),
    ("[jsonrpc]\nupstreem = 1\n", "jsonrpc.upstreem"),
])
def test_mistakes_name_the_field(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert fragment in str(caught.value) and "pw" not in str(caught.value).replace(fragment, "")


def test_environment_overrides(tmp_path):
    door = load(tmp_path, "[jsonrpc]\n", {
        "WALLET_SIGNER_JSONRPC__UPSTREAM": "http://127.0.0.1:8545",
        "WALLET_SIGNER_JSONRPC__MAX_BATCH_SIZE": "7",
    }).jsonrpc
    assert door is not None and door.upstream == "http://127.0.0.1:8545"
    assert door.max_batch_size == 7
