"""The typed config: the operator's TOML shape, env overrides, and fail-fast errors naming fields."""

from pathlib import Path

import pytest

from signer import config
from signer.errors import ConfigError

EXAMPLE = """
environment = "development"
[server]
listen = "127.0.0.1:50051"
[keys.hot]
backend = "env"
private_key_env = "HOT_WALLET_KEY"
[keys.treasury]
backend = "pkcs11"
token_label = "wallet-signer"
pin_env = "WALLET_SIGNER_PIN"
key_label = "treasury"
[keys.ops]
backend = "kms"
kms_key_id = "alias/ops"
region = "us-east-1"
endpoint_url = "http://127.0.0.1:4566"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "signer.toml"
    path.write_text(text)
    return path


def test_issue_examples_parse(tmp_path):
    cfg = config.load(write(tmp_path, EXAMPLE), environ={})
    assert cfg.server.listen == "127.0.0.1:50051"
    assert {k: v.backend for k, v in cfg.keys.items()} == {
        "hot": "env", "treasury": "pkcs11", "ops": "kms",
    }
    assert cfg.keys["treasury"].module == config.SOFTHSM_MODULE


def test_defaults_without_file():
    cfg = config.load(None, environ={})
    assert cfg.server.listen == config.DEFAULT_LISTEN and cfg.keys == {}
    assert cfg.server.is_loopback()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("environment = 'staging'", "environment: Input should be 'development' or 'production'"),
        ("[server]\nlisten = 'nohost'", "server.listen: Value error, expected HOST:PORT"),
        ("[server]\nlisten = '1.2.3.4:99999'", "server.listen"),
        ("[server]\nlisten = '127.0.0.1:1'\nmax_workers = 0", "server.max_workers"),
        ("[server]\nlistne = '127.0.0.1:1'", "server.listne: Extra inputs are not permitted"),
        ("[keys.hot]\nbackend = 'env'", "keys.hot.env: Value error, set exactly one of private_key_env"),
        ("[keys.hot]\nbackend = 'env'\nprivate_key_env='A'\nprivate_key_file='/x'",
         "set exactly one of private_key_env or private_key_file"),
        ("[keys.hot]\nbackend = 'env'\nprivate_key = '0x46'", "keys.hot.env.private_key: Extra inputs"),
        ("[keys.hot]\nbackend = 'ledger'", "keys.hot: Input tag 'ledger' found using 'backend' does not match"),
        ("[keys.hot]\nprivate_key_env = 'A'", "keys.hot: Unable to extract tag using discriminator 'backend'"),
        ("[keys.'bad id']\nbackend = 'env'\nprivate_key_env = 'A'", "keys.bad id.[key]: String should match pattern"),
        ("[keys.t]\nbackend = 'pkcs11'\ntoken_label = 't'\nkey_label = 'k'", "set exactly one of pin_env or pin_file"),
        ("[keys.t]\nbackend = 'pkcs11'\ntoken_label = 't'\npin_env = 'P'", "set key_label, key_id"),
        ("[keys.t]\nbackend = 'pkcs11'\ntoken_label = 't'\npin_env = 'P'\nkey_id = 'xyz'", "keys.t.pkcs11.key_id"),
        ("[keys.o]\nbackend = 'kms'\nkms_key_id = 'alias/o'", "keys.o.kms.region: Field required"),
        ("environment = 'production'\n[keys.hot]\nbackend = 'env'\nprivate_key_env = 'A'",
         "environment is production but keys ['hot'] use the development-only env backend"),
        ("not toml [", "is not valid TOML"),
    ],
)
def test_invalid_config_names_the_field(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, text), environ={})
    assert fragment in str(caught.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope\.toml"):
        config.load(tmp_path / "nope.toml", environ={})


def test_environment_overrides(tmp_path):
    path = write(tmp_path, EXAMPLE.replace("[keys.hot]", "[keys.Hot]"))
    cfg = config.load(path, environ={
        "WALLET_SIGNER_SERVER__LISTEN": "0.0.0.0:6000",
        "WALLET_SIGNER_SERVER__MAX_WORKERS": "8",
        "WALLET_SIGNER_KEYS__HOT__PRIVATE_KEY_ENV": "OTHER_VAR",
        "WALLET_SIGNER_KEYS__NEW__BACKEND": "env",
        "WALLET_SIGNER_KEYS__NEW__PRIVATE_KEY_FILE": "/run/secrets/new",
        "WALLET_SIGNER_PIN": "1234",  # a secret's variable: not an override, and not a field
        "UNRELATED": "x",
    })
    assert cfg.server.listen == "0.0.0.0:6000" and not cfg.server.is_loopback()
    assert cfg.server.max_workers == 8
    assert cfg.keys["Hot"].private_key_env == "OTHER_VAR"
    assert str(cfg.keys["new"].private_key_file) == "/run/secrets/new"


def test_environment_override_can_make_config_invalid(tmp_path):
    with pytest.raises(ConfigError, match="environment is production"):
        config.load(write(tmp_path, EXAMPLE), environ={"WALLET_SIGNER_ENVIRONMENT": "production"})


@pytest.mark.parametrize(("listen", "loopback"), [
    ("127.0.0.1:1", True), ("127.3.4.5:1", True), ("localhost:1", True), ("[::1]:1", True),
    ("0.0.0.0:1", False), ("[::]:1", False), ("10.0.0.1:1", False), ("example.com:1", False),
])
def test_loopback_detection(listen, loopback):
    assert config.ServerConfig(listen=listen).is_loopback() is loopback
