"""The typed config: the operator's TOML shape, env overrides, and fail-fast errors naming fields."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

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


# --- overrides are resolved against the model and validated like the file ------------------

PKCS11_KEY = "[keys.t]\nbackend = 'pkcs11'\ntoken_label = 't'\npin_env = 'P'\nkey_label = 'k'\n"


def test_override_of_a_str_field_keeps_the_raw_string(tmp_path):
    # "10" is a valid hex CKA_ID; parsed as a TOML integer it was refused ("valid string")
    cfg = config.load(write(tmp_path, PKCS11_KEY), environ={
        "WALLET_SIGNER_KEYS__T__KEY_ID": "10",
        "WALLET_SIGNER_KEYS__T__KEY_LABEL": "true",
        "WALLET_SIGNER_KEYS__T__POOL_SIZE": "8",
    })
    key = cfg.keys["t"]
    assert key.key_id == "10" and key.key_label == "true"
    assert key.pool_size == 8


def test_override_of_numeric_fields_parses_and_names_the_variable(tmp_path):
    cfg = config.load(write(tmp_path, EXAMPLE), environ={
        "WALLET_SIGNER_KEYS__OPS__READ_TIMEOUT_SECONDS": "2.5",
        "WALLET_SIGNER_SERVER__SHUTDOWN_GRACE_SECONDS": "3",
    })
    assert cfg.keys["ops"].read_timeout_seconds == 2.5
    assert cfg.server.shutdown_grace_seconds == 3.0
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, EXAMPLE),
                    environ={"WALLET_SIGNER_SERVER__MAX_WORKERS": "lots"})
    assert "server.max_workers: Input should be a valid integer" in str(caught.value)
    assert "(from WALLET_SIGNER_SERVER__MAX_WORKERS)" in str(caught.value)


@given(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
               min_size=1, max_size=40))
def test_any_text_reaches_a_str_field_unchanged(text):
    cfg = config.load(None, environ={"WALLET_SIGNER_KEYS__T__BACKEND": "pkcs11",
                                     "WALLET_SIGNER_KEYS__T__TOKEN_LABEL": "t",
                                     "WALLET_SIGNER_KEYS__T__PIN_ENV": "P",
                                     "WALLET_SIGNER_KEYS__T__KEY_LABEL": text})
    assert cfg.keys["t"].key_label == text


@pytest.mark.parametrize(("variable", "fragment"), [
    ("WALLET_SIGNER_SERVR__LISTEN", "the top level has no field 'servr'"),
    ("WALLET_SIGNER_SERVER__LISTNE", "server has no field 'listne'"),
    ("WALLET_SIGNER_X__Y", "the top level has no field 'x'"),
    ("WALLET_SIGNER_KEYS__HOT__NO_SUCH_FIELD", "keys.hot has no field 'no_such_field'"),
    ("WALLET_SIGNER_SERVER__LISTEN__PORT", "server.listen is a value, not a table"),
    ("WALLET_SIGNER_SERVER", "server is a table: set its fields"),
    ("WALLET_SIGNER_KEYS__HOT", "keys.hot is a table: set its fields"),
    ("WALLET_SIGNER_KEYS____X", "empty name between '__' separators"),
])
def test_unknown_or_misshaped_override_is_an_error_naming_the_variable(tmp_path, variable,
                                                                       fragment):
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, EXAMPLE), environ={variable: "127.0.0.1:1"})
    assert str(caught.value).startswith(f"{variable}: ") and fragment in str(caught.value)


def test_field_of_another_backend_is_refused_naming_the_variable(tmp_path):
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, EXAMPLE), environ={"WALLET_SIGNER_KEYS__HOT__PIN_ENV": "P"})
    assert str(caught.value) == ("WALLET_SIGNER_KEYS__HOT__PIN_ENV: keys.hot has no field "
                                 "'pin_env' (fields: address, backend, drain, private_key_env, "
                                 "private_key_file)")
    # a key made by overrides alone: its backend override is applied first
    with pytest.raises(ConfigError, match=r"keys.new has no field 'pin_env'"):
        config.load(None, environ={"WALLET_SIGNER_KEYS__NEW__PIN_ENV": "P",
                                   "WALLET_SIGNER_KEYS__NEW__BACKEND": "env",
                                   "WALLET_SIGNER_KEYS__NEW__PRIVATE_KEY_ENV": "K"})
    # and without any backend, pydantic says what is missing
    with pytest.raises(ConfigError, match=r"keys.new: Unable to extract tag using discriminator"):
        config.load(None, environ={"WALLET_SIGNER_KEYS__NEW__PIN_ENV": "P"})


def test_variables_that_are_not_overrides_are_left_alone(tmp_path):
    cfg = config.load(write(tmp_path, EXAMPLE), environ={
        "WALLET_SIGNER_PIN": "1234", "WALLET_SIGNER_CONFIG": "/etc/x.toml",
        "WALLET_SIGNER_REQUIRE_BACKENDS": "pkcs11", "OTHER__THING": "x",
    })
    assert cfg == config.load(write(tmp_path, EXAMPLE), environ={})


def test_keys_differing_only_by_case_make_an_override_ambiguous(tmp_path):
    text = EXAMPLE + "[keys.Hot]\nbackend = 'env'\nprivate_key_env = 'OTHER'\n"
    for variable in ("WALLET_SIGNER_KEYS__HOT__PRIVATE_KEY_ENV",
                     "WALLET_SIGNER_KEYS__hot__PRIVATE_KEY_ENV"):
        with pytest.raises(ConfigError) as caught:
            config.load(write(tmp_path, text), environ={variable: "X"})
        assert "ambiguous: keys has entries ['Hot', 'hot'] differing only by case" in str(
            caught.value)
    # without an override the two keys are fine (key ids are case-sensitive)
    assert set(config.load(write(tmp_path, text), environ={}).keys) >= {"Hot", "hot"}


def test_list_override_is_a_toml_array():
    raw: dict = {"clients": {"trader": {"identity": "t", "keys": ["hot"]}}}
    config.apply_overrides(raw, {"WALLET_SIGNER_CLIENTS__TRADER__KEYS": '["hot", "ops"]'})
    assert raw["clients"]["trader"]["keys"] == ["hot", "ops"]
    with pytest.raises(ConfigError, match=r"clients.trader.keys is a list: write it as a TOML"):
        config.apply_overrides(raw, {"WALLET_SIGNER_CLIENTS__TRADER__KEYS": "hot"})


class _Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    per_day: int = 0
    share: float = 0.0
    label: str = ""
    targets: list[str] = []


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limits: dict[str, _Limits] = {}
    default: _Limits | None = None


class _AnyModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policies: _Section = _Section()


def test_overlay_follows_any_model_without_a_list_of_sections():
    # the mechanism knows no section names: a model it has never seen works the same way
    raw: dict = {}
    for name, value in {"POLICIES__LIMITS__DESK__ENABLED": "true",
                        "POLICIES__LIMITS__DESK__PER_DAY": "12",
                        "POLICIES__LIMITS__DESK__SHARE": "0.5",
                        "POLICIES__LIMITS__DESK__LABEL": "007",
                        "POLICIES__LIMITS__DESK__TARGETS": '["a", "b"]',
                        "POLICIES__DEFAULT__PER_DAY": "3"}.items():
        config._overlay(raw, _AnyModel, name.split("__"), value, name)
    parsed = _AnyModel.model_validate(raw)
    assert parsed.policies.limits["desk"] == _Limits(enabled=True, per_day=12, share=0.5,
                                                     label="007", targets=["a", "b"])
    assert parsed.policies.default == _Limits(per_day=3)
    with pytest.raises(ConfigError, match=r"policies.limits.desk has no field 'enabld'"):
        config._overlay(raw, _AnyModel, ["POLICIES", "LIMITS", "DESK", "ENABLD"], "1", "V")
