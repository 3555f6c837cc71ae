"""Key sources: keystore files, Vault/OpenBao KV v2 and AWS Secrets Manager, against real
servers (an OpenBao dev server, moto's server over HTTP) and published vectors.

What each must do: open the key it names and sign byte for byte as eth-account does with the same
key; refuse with an error naming the key and the cause (exit code 3 at start-up) when it cannot;
never let the secret reach an error, a log line or a repr.
"""

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from signer import cli
from signer.backends.keystore import KeystoreBackend
from signer.config import KeystoreKeyConfig, VaultKeyConfig, validate
from signer.errors import BackendUnavailable, FailedPrecondition, PermissionDenied
from signer.keyload import open_backend
from signer.service import KeyRing
from signer.wallet import WalletSigner
from tests.support.eth_transactions import assert_signs_like_eth_account
from tests.support.fixtures_kms import REGION
from tests.support.fixtures_sources import PASSWORD, AppRole, OpenBao, cheap_keystore
from tests.support.reference_vectors import load as load_vector

SPEC = load_vector("web3_secret_storage")
# --- byte for byte as eth-account -------------------------------------------------------------


@pytest.mark.parametrize("source", ["keystore", "vault", "aws_secret"])
def test_each_source_signs_like_eth_account(source: str, env_key: str,
                                            request: pytest.FixtureRequest):
    signer: WalletSigner = request.getfixturevalue(f"{source}_signer")
    assert_signs_like_eth_account(signer, env_key)


# --- keystore files ----------------------------------------------------------------------------


@pytest.mark.parametrize("kdf", ["pbkdf2", "scrypt"])
def test_spec_vectors_open_to_the_published_secret(kdf: str, tmp_path: Path, monkeypatch):
    """The Web3 Secret Storage spec's own vectors (the scrypt one at n = 2**18: full cost)."""
    (tmp_path / "v.json").write_text(json.dumps(SPEC["vectors"][kdf]))
    monkeypatch.setenv("KEYSTORE_PW", SPEC["password"])
    config = KeystoreKeyConfig(backend="keystore", keystore_file=tmp_path / "v.json",
                               password_env="KEYSTORE_PW")
    signer = WalletSigner("spec", open_backend("spec", config))
    assert signer.address == SPEC["address"]
    signer.self_test()


def test_eth_account_keystore_at_the_default_kdf_opens(tmp_path: Path, env_key: str):
    """Once at eth-account's default cost (scrypt n = 2**18, r = 8, p = 1), as operators'
    files are; every other test uses a cheap n."""
    keystore = Account.encrypt(env_key, PASSWORD)
    assert keystore["crypto"]["kdfparams"]["n"] == 2**18
    (tmp_path / "k.json").write_text(json.dumps(keystore))
    (tmp_path / "pw").write_text(PASSWORD)
    config = KeystoreKeyConfig(backend="keystore", keystore_file=tmp_path / "k.json",
                               password_file=tmp_path / "pw")
    assert WalletSigner("k", open_backend("k", config)).address == Account.from_key(env_key).address


def test_pbkdf2_keystore_written_by_eth_account_opens(tmp_path: Path, env_key: str):
    (tmp_path / "k.json").write_text(json.dumps(cheap_keystore(env_key, kdf="pbkdf2")))
    (tmp_path / "pw").write_text(PASSWORD)
    config = KeystoreKeyConfig(backend="keystore", keystore_file=tmp_path / "k.json",
                               password_file=tmp_path / "pw")
    assert WalletSigner("k", open_backend("k", config)).address == Account.from_key(env_key).address


def _config_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "signer.toml"
    path.write_text(body)
    return path


def _start_up_fails(config: Path, key_id: str, capsys, caplog) -> str:
    """Start-up (the `address` command opens every key as `serve` does) exits 3; returns what
    was written to stderr and the log."""
    with caplog.at_level(logging.DEBUG):
        code = cli.main(["address", key_id, "--config", str(config)])
    captured = capsys.readouterr()
    text = captured.out + captured.err + caplog.text
    assert code == 3, text
    return text


def _assert_secret_free(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret.removeprefix("0x").lower() not in text.lower()


def test_wrong_keystore_password_names_the_key_and_the_cause(tmp_path, env_key, capsys, caplog):
    (tmp_path / "k.json").write_text(json.dumps(cheap_keystore(env_key)))
    (tmp_path / "pw").write_text("not the password")
    config = _config_file(tmp_path, f"""
[keys.treasury]
backend = "keystore"
keystore_file = "{tmp_path / 'k.json'}"
password_file = "{tmp_path / 'pw'}"
""")
    text = _start_up_fails(config, "treasury", capsys, caplog)
    assert "keys.treasury" in text and "wrong keystore password" in text
    _assert_secret_free(text, env_key, "not the password")


def test_a_keystore_that_is_not_one_is_a_configuration_error(tmp_path: Path):
    (tmp_path / "k.json").write_text('{"version": 3}')
    (tmp_path / "pw").write_text(PASSWORD)
    config = KeystoreKeyConfig(backend="keystore", keystore_file=tmp_path / "k.json",
                               password_file=tmp_path / "pw")
    with pytest.raises(Exception, match=r"keys.k: keystore file .*: not a V3 keystore"):
        KeystoreBackend.open("k", config)
    config = config.model_copy(update={"keystore_file": tmp_path / "missing.json"})
    with pytest.raises(FailedPrecondition, match=r"keys.k: cannot read keystore file"):
        KeystoreBackend.open("k", config)


# --- Vault / OpenBao ---------------------------------------------------------------------------


def _vault_toml(openbao: OpenBao, role: AppRole, path: str, key_id: str = "agent",
                **extra: str) -> str:
    lines = [f"[keys.{key_id}]", 'backend = "vault"', f'url = "{openbao.url}"', f'path = "{path}"',
             f'role_id_file = "{role.role_id_file}"', f'secret_id_file = "{role.secret_id_file}"']
    lines += [f'{name} = "{value}"' for name, value in extra.items()]
    return "\n".join(lines) + "\n"


def test_vault_field_may_hold_a_keystore_and_its_password(openbao, approle, vault_secret,
                                                          env_key):
    role = approle()
    path = vault_secret({"keystore": json.dumps(cheap_keystore(env_key)), "password": PASSWORD})
    config = VaultKeyConfig(backend="vault", url=openbao.url, path=path, field="keystore",
                            password_field="password", role_id_file=role.role_id_file,
                            secret_id_file=role.secret_id_file)
    backend = open_backend("agent", config)
    try:
        assert WalletSigner("agent", backend).address == Account.from_key(env_key).address
    finally:
        backend.close()


def test_vault_version_pin_reads_that_version(openbao, approle, vault_secret, env_key):
    role = approle()
    path = vault_secret({"private_key": env_key})
    vault_secret({"private_key": "0x" + "11" * 32}, path=path)  # version 2
    base = dict(backend="vault", url=openbao.url, path=path, role_id_file=role.role_id_file,
                secret_id_file=role.secret_id_file)
    pinned = open_backend("a", VaultKeyConfig(**base, version=1))
    latest = open_backend("b", VaultKeyConfig(**base))
    try:
        assert WalletSigner("a", pinned).address == Account.from_key(env_key).address
        assert WalletSigner("b", latest).address == Account.from_key("0x" + "11" * 32).address
    finally:
        pinned.close()
        latest.close()


def test_denied_approle_names_the_key_and_the_cause(openbao, approle, vault_secret, env_key,
                                                    tmp_path, capsys, caplog):
    role = approle()
    role.secret_id_file.write_text("00000000-0000-0000-0000-000000000000")
    config = _config_file(tmp_path, _vault_toml(openbao, role, vault_secret({"private_key": env_key})))
    text = _start_up_fails(config, "agent", capsys, caplog)
    assert "keys.agent" in text and "Vault refused approle login" in text
    _assert_secret_free(text, env_key, role.role_id_file.read_text())


def test_vault_policy_denial_and_missing_secret(openbao, approle, vault_secret, env_key, tmp_path,
                                                capsys, caplog):
    role = approle()
    outside = vault_secret({"private_key": env_key}, path="elsewhere/k")
    config = _config_file(tmp_path, _vault_toml(openbao, role, outside))
    text = _start_up_fails(config, "agent", capsys, caplog)
    assert "keys.agent" in text and "permission denied" in text
    config = _config_file(tmp_path, _vault_toml(openbao, role, "agents/nobody-wrote-this"))
    text = _start_up_fails(config, "agent", capsys, caplog)
    assert "keys.agent" in text and "no such secret" in text
    path = vault_secret({"other": "x"})
    config = _config_file(tmp_path, _vault_toml(openbao, role, path))
    assert "has no field 'private_key'" in _start_up_fails(config, "agent", capsys, caplog)
    _assert_secret_free(text, env_key)


def test_unreachable_and_sealed_vault(openbao, approle, vault_secret, env_key, tmp_path, capsys,
                                      caplog):
    from tests.support.fixtures_sources import free_port

    role = approle()
    path = vault_secret({"private_key": env_key})
    gone = _config_file(tmp_path, _vault_toml(openbao, role, path).replace(
        openbao.url, f"http://127.0.0.1:{free_port()}"))
    text = _start_up_fails(gone, "agent", capsys, caplog)
    assert "keys.agent" in text and "Vault unreachable" in text

    config = _config_file(tmp_path, _vault_toml(openbao, role, path))
    openbao.admin.sys.seal()
    try:
        text = _start_up_fails(config, "agent", capsys, caplog)
    finally:
        openbao.admin.sys.submit_unseal_key(openbao.unseal_key())
    assert "keys.agent" in text and "sealed" in text
    _assert_secret_free(text, env_key)


def test_vault_token_is_renewed_and_logged_in_again_at_its_max_ttl(openbao, approle,
                                                                  vault_secret, env_key):
    """A 2 s token TTL with a 5 s max: the renewer renews at two thirds of the TTL, and once
    renewal stops buying time (max TTL) it logs in again with AppRole; reads keep working."""
    from signer.backends.vault import VaultBackend

    role = approle("short", token_ttl="2s", token_max_ttl="5s")
    path = vault_secret({"private_key": env_key})
    config = VaultKeyConfig(backend="vault", url=openbao.url, path=path,
                            role_id_file=role.role_id_file, secret_id_file=role.secret_id_file)
    backend = open_backend("agent", config)
    assert isinstance(backend, VaultBackend)
    session = backend.session
    try:
        assert 0 < session.ttl <= 2
        deadline = time.monotonic() + 20
        while (session.renewals < 2 or session.logins < 2) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert session.renewals >= 2 and session.logins >= 2, (session.renewals, session.logins)
        time.sleep(2.5)  # longer than the TTL: only a renewed or new token can read now
        data, version = session.read("secret", path, None)
        assert data["private_key"] == env_key and version == 1
    finally:
        backend.close()
    assert not any(t.name.startswith("vault-renew") and t.is_alive() for t in _threads())


def _threads() -> list[Any]:
    import threading

    return threading.enumerate()


def test_keys_sharing_a_login_share_one_session_and_one_renewer(openbao, approle, vault_secret,
                                                                env_key, tmp_path):
    role = approle()
    paths = [vault_secret({"private_key": "0x" + f"{i:02x}" * 32}) for i in (1, 2, 3)]
    body = "".join(_vault_toml(openbao, role, p, key_id=f"k{i}") for i, p in enumerate(paths))
    config = validate(__import__("tomllib").loads(body), "test")
    before = sum(t.name.startswith("vault-renew") for t in _threads())
    keyring = KeyRing.from_config(config)
    try:
        assert len(keyring) == 3
        sessions = {id(s.backend.session) for s in keyring}  # type: ignore[attr-defined]
        assert len(sessions) == 1
        assert sum(t.name.startswith("vault-renew") for t in _threads()) == before + 1
    finally:
        keyring.close()
    assert sum(t.name.startswith("vault-renew") for t in _threads()) == before


# --- AWS Secrets Manager -----------------------------------------------------------------------


def _aws_toml(endpoint: str, secret_id: str, key_id: str = "agent", **extra: str) -> str:
    lines = [f"[keys.{key_id}]", 'backend = "aws-secret"', f'secret_id = "{secret_id}"',
             f'region = "{REGION}"', f'endpoint_url = "{endpoint}"']
    lines += [f'{name} = {value}' for name, value in extra.items()]
    return "\n".join(lines) + "\n"


def test_aws_secret_holding_a_keystore_with_its_password_in_another(secrets_admin, env_key):
    name = f"ks{os.urandom(4).hex()}"
    secrets_admin.create_secret(Name=name, SecretString=json.dumps(cheap_keystore(env_key)))
    secrets_admin.create_secret(Name=name + "-pw", SecretString=PASSWORD)
    config = validate(__import__("tomllib").loads(_aws_toml(
        secrets_admin.meta.endpoint_url, name, password_secret_id=f'"{name}-pw"')), "t")
    keyring = KeyRing.from_config(config)
    assert keyring.get("agent").address == Account.from_key(env_key).address
    keyring.close()


def test_aws_secret_version_stage(secrets_admin, env_key):
    name = f"staged{os.urandom(4).hex()}"
    secrets_admin.create_secret(Name=name, SecretString=env_key)
    secrets_admin.put_secret_value(SecretId=name, SecretString="0x" + "22" * 32)  # now AWSCURRENT
    endpoint = secrets_admin.meta.endpoint_url
    current = KeyRing.from_config(validate(__import__("tomllib").loads(
        _aws_toml(endpoint, name)), "t"))
    previous = KeyRing.from_config(validate(__import__("tomllib").loads(
        _aws_toml(endpoint, name, version_stage='"AWSPREVIOUS"')), "t"))
    assert current.get("agent").address == Account.from_key("0x" + "22" * 32).address
    assert previous.get("agent").address == Account.from_key(env_key).address


def test_aws_missing_secret_and_unreachable_endpoint(secrets_admin, tmp_path, capsys, caplog):
    from tests.support.fixtures_sources import free_port

    config = _config_file(tmp_path, _aws_toml(secrets_admin.meta.endpoint_url, "no-such-secret"))
    text = _start_up_fails(config, "agent", capsys, caplog)
    assert "keys.agent" in text and "no such secret" in text and "ResourceNotFound" in text
    config = _config_file(tmp_path, _aws_toml(f"http://127.0.0.1:{free_port()}", "x",
                                              max_attempts="1", connect_timeout_seconds="0.5"))
    text = _start_up_fails(config, "agent", capsys, caplog)
    assert "keys.agent" in text and "Secrets Manager unreachable" in text


def test_throttled_secrets_manager_is_retried_then_named(secrets_emulator, secrets_admin, env_key,
                                                         tmp_path, capsys, caplog):
    """A real throttling answer over HTTP: the emulator's fault middleware (tests/secrets_emulator.py)
    answers GetSecretValue with ThrottlingException before moto sees it; botocore's standard
    retries run for real, then the error names the key and the throttling."""
    name = f"thr{os.urandom(4).hex()}"
    secrets_admin.create_secret(Name=name, SecretString=env_key)
    config = _config_file(tmp_path, _aws_toml(secrets_admin.meta.endpoint_url, name,
                                              max_attempts="2"))
    secrets_emulator.add_fault(operation="GetSecretValue", error="ThrottlingException")
    try:
        before = secrets_emulator.count("GetSecretValue")
        text = _start_up_fails(config, "agent", capsys, caplog)
        assert secrets_emulator.count("GetSecretValue") - before == 2  # max_attempts, all throttled
    finally:
        secrets_emulator.clear()
    assert "keys.agent" in text and "throttled" in text and "ThrottlingException" in text
    _assert_secret_free(text, env_key)
    # once the throttling stops, the same config starts
    assert cli.main(["address", "agent", "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip() == Account.from_key(env_key).address


# --- bulk loading ------------------------------------------------------------------------------


def test_keystore_folder_loads_every_key_and_skips_a_broken_one(tmp_path, caplog):
    folder = tmp_path / "keystores"
    folder.mkdir()
    keys = {f"agent-{i}": Account.create().key.hex() for i in range(3)}
    for name, key in keys.items():
        (folder / f"{name}.json").write_text(json.dumps(cheap_keystore(key)))
    (folder / "broken.json").write_text(json.dumps(cheap_keystore(keys["agent-0"], "other pw")))
    (folder / "bad name!.json").write_text("{}")
    (tmp_path / "pw").write_text(PASSWORD)
    config = validate({"server": {"key_load_concurrency": 2}, "key_sources": {"fleet": {
        "backend": "keystore", "folder": str(folder), "password_file": str(tmp_path / "pw")}}},
        "t")
    with caplog.at_level(logging.INFO):
        keyring = KeyRing.from_config(config)
    assert {s.key_id: s.address for s in keyring} == {
        name: Account.from_key(key).address for name, key in keys.items()}
    assert "key_sources.fleet: key 'broken' failed to load and is skipped" in caplog.text
    assert "wrong keystore password" in caplog.text
    assert "skipping 'bad name!'" in caplog.text
    _assert_secret_free(caplog.text, PASSWORD, *keys.values())
    keyring.close()


def test_a_source_key_named_like_a_keys_entry_stops_the_start_up(tmp_path, env_key, monkeypatch):
    folder = tmp_path / "ks"
    folder.mkdir()
    (folder / "hot.json").write_text(json.dumps(cheap_keystore(env_key)))
    monkeypatch.setenv("PW", PASSWORD)
    monkeypatch.setenv("HOT", env_key)
    config = validate({
        "keys": {"hot": {"backend": "env", "private_key_env": "HOT"}},
        "key_sources": {"fleet": {"backend": "keystore", "folder": str(folder),
                                  "password_env": "PW"}}}, "t")
    with pytest.raises(Exception, match=r"key_sources.fleet: found key 'hot', which keys.hot "
                                        r"already names"):
        KeyRing.from_config(config)


def test_vault_folder_loads_every_secret_by_its_name(openbao, approle, vault_secret, caplog):
    role = approle()
    folder = f"agents/fleet{os.urandom(3).hex()}"
    keys = {f"bot{i}": "0x" + Account.create().key.hex().removeprefix("0x") for i in range(3)}
    for name, key in keys.items():
        vault_secret({"private_key": key}, path=f"{folder}/{name}")
    vault_secret({"private_key": "not hex"}, path=f"{folder}/corrupt")
    config = validate({"key_sources": {"vault-fleet": {
        "backend": "vault", "url": openbao.url, "path": folder,
        "role_id_file": str(role.role_id_file), "secret_id_file": str(role.secret_id_file)}}},
        "t")
    with caplog.at_level(logging.INFO):
        keyring = KeyRing.from_config(config)
    try:
        assert {s.key_id: s.address for s in keyring} == {
            n: Account.from_key(k).address for n, k in keys.items()}
        assert "key 'corrupt' failed to load and is skipped" in caplog.text
    finally:
        keyring.close()


def test_secrets_manager_prefix_and_tag_select_the_keys(secrets_admin):
    prefix = f"fleet{os.urandom(3).hex()}/"
    keys = {f"bot{i}": "0x" + Account.create().key.hex().removeprefix("0x") for i in range(3)}
    for i, (name, key) in enumerate(keys.items()):
        tags = [{"Key": "wallet-signer", "Value": "yes" if i != 2 else "no"}]
        secrets_admin.create_secret(Name=prefix + name, SecretString=key, Tags=tags)
    secrets_admin.create_secret(Name=f"x{prefix}bot9", SecretString=keys["bot0"])
    endpoint = secrets_admin.meta.endpoint_url
    by_prefix = KeyRing.from_config(validate({"key_sources": {"sm": {
        "backend": "aws-secret", "region": REGION, "endpoint_url": endpoint,
        "name_prefix": prefix}}}, "t"))
    assert {s.key_id for s in by_prefix} == set(keys)
    by_tag = KeyRing.from_config(validate({"key_sources": {"sm": {
        "backend": "aws-secret", "region": REGION, "endpoint_url": endpoint,
        "name_prefix": prefix, "tag": "wallet-signer=yes"}}}, "t"))
    assert {s.key_id: s.address for s in by_tag} == {
        n: Account.from_key(k).address for n, k in keys.items() if n != "bot2"}


# --- address pinning ---------------------------------------------------------------------------


def test_a_pinned_address_that_differs_refuses_the_key(tmp_path, env_key, capsys, caplog):
    (tmp_path / "k.json").write_text(json.dumps(cheap_keystore(env_key)))
    (tmp_path / "pw").write_text(PASSWORD)
    other = Account.create().address
    body = f"""
[keys.treasury]
backend = "keystore"
keystore_file = "{tmp_path / 'k.json'}"
password_file = "{tmp_path / 'pw'}"
"""
    config = _config_file(tmp_path, body + f'address = "{other}"\n')
    text = _start_up_fails(config, "treasury", capsys, caplog)
    assert f"pins address {other}" in text and Account.from_key(env_key).address in text
    right = _config_file(tmp_path, body + f'address = "{Account.from_key(env_key).address.lower()}"\n')
    assert cli.main(["address", "treasury", "--config", str(right)]) == 0


def test_the_self_test_refuses_a_key_whose_address_changed(env_key):
    """The backend's public key changing under a pinned key (an alias moved, a secret replaced):
    simulated by swapping the backend object, as no real source changes its key in place."""
    from signer.backends.env import EnvBackend, parse_private_key

    signer = WalletSigner("k", EnvBackend(parse_private_key(env_key, "t")),
                          pinned_address=Account.from_key(env_key).address)
    signer.self_test()
    signer.backend = EnvBackend(parse_private_key("0x" + "33" * 32, "t"))
    with pytest.raises(FailedPrecondition, match="pins address"):
        signer.self_test()
    assert not signer.health.serving


def test_keys_list_prints_the_pin_line(tmp_path, env_key, monkeypatch, capsys):
    monkeypatch.setenv("HOT", env_key)
    config = _config_file(tmp_path, '[keys.hot]\nbackend = "env"\nprivate_key_env = "HOT"\n')
    assert cli.main(["keys", "list", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f'[keys.hot]\naddress = "{Account.from_key(env_key).address}"' in out


# --- the production rule and the error vocabulary -----------------------------------------------


def test_sources_are_allowed_in_production_and_env_is_not(tmp_path):
    base = {"environment": "production",
            "server": {"tls_cert_file": "c", "tls_key_file": "k", "client_ca_file": "ca"},
            "clients": {"a": {"identity": "a", "keys": ["*"], "methods": ["ListKeys"]}}}
    validate({**base, "keys": {"k": {"backend": "keystore", "keystore_file": "k.json",
                                     "password_env": "P"}}}, "t")
    with pytest.raises(Exception, match="development-only env backend"):
        validate({**base, "keys": {"k": {"backend": "env", "private_key_env": "X"}}}, "t")


@pytest.mark.parametrize("error", [PermissionDenied, BackendUnavailable, FailedPrecondition])
def test_source_failures_are_backend_exit_codes(error: Callable[[str], Exception]):
    assert cli.exit_code(error("x")) == 3  # type: ignore[arg-type]


def test_token_file_login_and_renewal(openbao, vault_secret, env_key, tmp_path):
    """A renewable token from a file (as Vault Agent writes one), TTL 2 s: the renewer keeps it
    alive by renewing alone (no login to fall back on), well past its first TTL."""
    from signer.backends.vault import VaultBackend

    token = openbao.admin.auth.token.create(policies=["agents-reader"], ttl="2s",
                                            renewable=True)["auth"]["client_token"]
    (tmp_path / "token").write_text(token)
    path = vault_secret({"private_key": env_key})
    config = VaultKeyConfig(backend="vault", url=openbao.url, path=path,
                            token_file=tmp_path / "token")
    backend = open_backend("agent", config)
    assert isinstance(backend, VaultBackend)
    try:
        assert WalletSigner("agent", backend).address == Account.from_key(env_key).address
        time.sleep(4.5)
        assert backend.session.renewals >= 2
        assert backend.session.read("secret", path, None)[0]["private_key"] == env_key
    finally:
        backend.close()
    _assert_secret_free(repr(backend) + repr(backend.session), token, env_key)


def test_kubernetes_auth_login_and_a_rejected_service_account_token(
        openbao, kubernetes_auth, vault_secret, env_key, tmp_path, capsys, caplog):
    """OpenBao's real kubernetes auth; the Kubernetes TokenReview API is a loopback stand-in
    (see the `kubernetes_auth` fixture): no Kubernetes API server runs here."""
    path = vault_secret({"private_key": env_key})
    (tmp_path / "sa-token").write_text(kubernetes_auth.jwt)
    config = VaultKeyConfig(backend="vault", url=openbao.url, path=path,
                            kubernetes_role=kubernetes_auth.role,
                            kubernetes_jwt_file=tmp_path / "sa-token")
    backend = open_backend("agent", config)
    try:
        assert WalletSigner("agent", backend).address == Account.from_key(env_key).address
    finally:
        backend.close()
    (tmp_path / "sa-token").write_text(kubernetes_auth.jwt[:-8] + "AAAAAAAA")
    body = (f'[keys.agent]\nbackend = "vault"\nurl = "{openbao.url}"\npath = "{path}"\n'
            f'kubernetes_role = "signer"\nkubernetes_jwt_file = "{tmp_path / "sa-token"}"\n')
    text = _start_up_fails(_config_file(tmp_path, body), "agent", capsys, caplog)
    assert "keys.agent" in text and "Vault refused kubernetes login" in text
    _assert_secret_free(text, env_key, kubernetes_auth.jwt.split(".")[2])


@pytest.mark.parametrize("concurrency", [1, 2])
def test_keys_open_in_parallel_within_key_load_concurrency_with_progress(
        concurrency, tmp_path, monkeypatch, caplog):
    """The real decryption, wrapped to count how many run at once."""
    import threading

    from signer import keyload
    from signer.backends import keystore

    folder = tmp_path / "ks"
    folder.mkdir()
    for i in range(5):
        (folder / f"k{i}.json").write_text(json.dumps(cheap_keystore(Account.create().key.hex())))
    (tmp_path / "pw").write_text(PASSWORD)
    running, peak, lock = [0], [0], threading.Lock()
    real = keystore.decrypt_keystore

    def counted(*args: Any) -> Any:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.05)  # long enough for the pool's threads to overlap
            return real(*args)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(keystore, "decrypt_keystore", counted)
    monkeypatch.setattr(keyload, "PROGRESS_EVERY_SECONDS", 0.0)
    config = validate({"server": {"key_load_concurrency": concurrency}, "key_sources": {"f": {
        "backend": "keystore", "folder": str(folder), "password_file": str(tmp_path / "pw")}}},
        "t")
    with caplog.at_level(logging.INFO):
        keyring = KeyRing.from_config(config)
    assert len(keyring) == 5 and peak[0] == concurrency
    assert "opening keys: 1 of 5 done" in caplog.text and "opened 5 of 5 keys" in caplog.text
    keyring.close()
