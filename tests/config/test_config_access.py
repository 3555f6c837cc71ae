"""Config for TLS, clients and the store: the issue's shape parses, every mistake names what
is wrong, production refuses to run without identified callers."""

from pathlib import Path

import pytest

from signer import config
from signer.config import ServerConfig
from signer.errors import ConfigError
from signer.grpc.server import SignerServer
from signer.service import KeyRing
from tests.conftest import env_wallet, open_app

ISSUE_SHAPE = """
[server]
listen = "0.0.0.0:50051"
tls_cert_file = "/etc/wallet-signer/tls/server.crt"
tls_key_file = "/etc/wallet-signer/tls/server.key"
client_ca_file = "/etc/wallet-signer/tls/clients-ca.crt"

[keys.hot]
backend = "env"
private_key_env = "HOT"

[clients.trader]
identity = "spiffe://prod/agents/trader"
keys = ["hot"]
methods = ["GetAddress", "SignTransaction", "SignMessage", "SignTypedData"]

[clients.reader]
identity = "reader.ops.internal"
keys = ["*"]
methods = ["ListKeys", "GetAddress"]

[store]
url = "sqlite:///var/lib/wallet-signer/state.db"
"""


def load(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "signer.toml"
    path.write_text(text)
    return config.load(path, environ={})


def test_the_issue_shape_parses(tmp_path):
    cfg = load(tmp_path, ISSUE_SHAPE)
    assert cfg.server.tls and cfg.server.client_ca_file == Path(
        "/etc/wallet-signer/tls/clients-ca.crt")
    assert cfg.clients["trader"].keys == ["hot"]
    assert cfg.clients["reader"].methods == ["ListKeys", "GetAddress"]
    assert cfg.store.url == "sqlite:///var/lib/wallet-signer/state.db"
    assert load(tmp_path, "").store.url == "sqlite://.wallet-signer/state.db"
    defaults = load(tmp_path, ISSUE_SHAPE.replace(
        'methods = ["GetAddress", "SignTransaction", "SignMessage", "SignTypedData"]', ""))
    assert defaults.clients["trader"].methods == [
        "ListKeys", "GetAddress", "SignTransaction", "SignMessage", "SignTypedData"]


@pytest.mark.parametrize(("change", "message"), [
    (('tls_key_file = "/etc/wallet-signer/tls/server.key"\n', ""),
     "server: Value error, set both tls_cert_file and tls_key_file, or neither"),
    (('tls_cert_file = "/etc/wallet-signer/tls/server.crt"\ntls_key_file = "/etc/wallet-signer/tls/server.key"\n', ""),
     "server: Value error, client_ca_file (mTLS) needs tls_cert_file and tls_key_file"),
    (('client_ca_file = "/etc/wallet-signer/tls/clients-ca.crt"\n', ""),
     "(top level): Value error, clients are identified by their TLS certificate: set "
     "server.client_ca_file (and server.tls_cert_file, server.tls_key_file)"),
    (('keys = ["hot"]', 'keys = ["hot", "cold"]'),
     "(top level): Value error, clients.trader.keys: no such keys ['cold']"),
    (('keys = ["*"]', 'keys = ["*", "hot"]'),
     """(top level): Value error, clients.reader.keys: "*" already means every key"""),
    (('identity = "reader.ops.internal"', 'identity = "spiffe://prod/agents/trader"'),
     "(top level): Value error, clients.reader.identity: 'spiffe://prod/agents/trader' is also "
     "the identity of clients.trader"),
    (('methods = ["ListKeys", "GetAddress"]', 'methods = ["ListKeys", "SignEverything"]'),
     "clients.reader.methods.1: Input should be 'ListKeys', 'GetAddress', 'SignTransaction', "
     "'SignMessage', 'SignTypedData', 'SignAuthorization', 'Forward' or 'Reload'"),
    (('keys = ["*"]', "keys = []"), "clients.reader.keys: List should have at least 1 item after validation, not 0"),
    (('url = "sqlite:///var/lib/wallet-signer/state.db"', 'url = "mysql://x/y"'),
     "store.url: Value error, expected sqlite://PATH or postgresql://USER@HOST/DB"),
    (('url = "sqlite:///var/lib/wallet-signer/state.db"',
      'url = "postgresql://signer:hunter2@db/signer"'),
     "store.url: Value error, no password in the URL (the user:password@ part): use "
     "password_file or PGPASSFILE"),
])
def test_mistakes_name_what_is_wrong(tmp_path, change, message):
    old, new = change
    assert old in ISSUE_SHAPE
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, ISSUE_SHAPE.replace(old, new))
    assert str(caught.value).endswith(message), str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_production_requires_identified_callers(tmp_path):
    kms_only = 'environment = "production"\n[keys.ops]\nbackend = "kms"\nkms_key_id = "k"\nregion = "r"\n'
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, kms_only)
    assert str(caught.value).endswith(
        "environment is production, which requires every caller to be identified: missing "
        "server.tls_cert_file and server.tls_key_file, server.client_ca_file (mTLS), at least "
        "one [clients.NAME] entry")
    production = ISSUE_SHAPE.replace(
        '[keys.hot]\nbackend = "env"\nprivate_key_env = "HOT"',
        '[keys.hot]\nbackend = "kms"\nkms_key_id = "k"\nregion = "r"')
    production = production.replace(
        'methods = ["GetAddress", "SignTransaction", "SignMessage", "SignTypedData"]',
        'methods = ["GetAddress"]')  # no client may sign, so none needs a policy
    assert load(tmp_path, 'environment = "production"\n' + production).environment == "production"


def test_production_refuses_a_signing_client_without_a_policy(tmp_path):
    production = 'environment = "production"\n' + ISSUE_SHAPE.replace(
        '[keys.hot]\nbackend = "env"\nprivate_key_env = "HOT"',
        '[keys.hot]\nbackend = "kms"\nkms_key_id = "k"\nregion = "r"')
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, production)
    assert str(caught.value).endswith(
        "environment is production but clients ['trader'] may sign and have no policy: give "
        "each a `policy` (default deny), or take the Sign* methods away")
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, ISSUE_SHAPE.replace('keys = ["hot"]', 'keys = ["hot"]\npolicy = "nope"'))
    assert "clients.trader.policy: unknown policy 'nope' (policies: none defined)" in str(
        caught.value)


def test_plaintext_on_a_non_loopback_address_needs_tls_or_the_escape_hatch(env_key, caplog):
    app = open_app(KeyRing([env_wallet(env_key)]))
    with pytest.raises(ConfigError, match="not a loopback address and TLS is not configured"):
        SignerServer(app, ServerConfig(listen="0.0.0.0:0"))
    server = SignerServer(app, ServerConfig(listen="0.0.0.0:0"), allow_insecure=True)
    try:
        assert "INSECURE: --insecure-listen" in caplog.text
    finally:
        server.stop(0)
