"""`keys rotate` creating the next version of keys kept as secrets: a keystore file beside the
configured one, a Vault KV version (a real OpenBao dev server), a Secrets Manager version (moto's
server over HTTP). Each: version 2 active with a new address, version 1 draining and still
signing as itself, the written secret decrypting to version 2's key (eth-account signs the same
bytes), a second rotation, and version 1 staying version 1 after a restart and a reload."""

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from signer import config as config_module
from signer.admin import rotation
from signer.backends.keystore import decrypt_keystore
from signer.errors import FailedPrecondition, InvalidRequest, PermissionDenied
from signer.eth import transactions
from signer.store import open_store
from tests.support.fixtures_kms import REGION
from tests.support.fixtures_sources import PASSWORD
from tests.support.rotation import CALLER
from tests.support.rotation import app as _app
from tests.support.rotation import sender as _sender
from tests.support.rotation import sign as _sign
from tests.support.rotation import tx as _tx
from tests.support.rotation import write_config as _write

LIGHT_SCRYPT_N = 2**4  # eth-account's scrypt at a test cost: the same code path
ROTATOR_POLICY = 'path "secret/data/agents/*" { capabilities = ["read", "create", "update"] }\n'


def _keystore(key: str | bytes, kdf: str = "scrypt") -> dict[str, Any]:
    return dict(Account.encrypt(key, PASSWORD, kdf=kdf,
                                iterations=LIGHT_SCRYPT_N if kdf == "scrypt" else 64))


def _eth_account_raw(key: bytes, tx: transactions.UnsignedTransaction) -> bytes:
    signed = Account.sign_transaction({
        "type": 2, "chainId": tx.chain_id, "nonce": tx.nonce,
        "to": Account.from_key(key).address if tx.to is None else _checksum(tx.to),
        "value": tx.value, "gas": tx.gas_limit, "data": tx.data,
        "maxFeePerGas": tx.max_fee_per_gas, "maxPriorityFeePerGas": tx.max_priority_fee_per_gas,
    }, key)
    return bytes(signed.raw_transaction)


def _checksum(address: bytes) -> str:
    from eth_utils import to_checksum_address

    return str(to_checksum_address(address))


def _rows(path: Path, key_id: str) -> list[Any]:
    store = open_store(config_module.load(path).store.url)
    try:
        return [r for r in store.key_versions() if r.key_id == key_id]
    finally:
        store.close()


def _check_versions(path: Path, key_id: str, old: str, new_key: bytes,
                    active_version: int = 2) -> None:
    """Through the application: by key id the active version signs (byte-identical to
    eth-account with the written key); by address the draining version 1 signs the sweep as
    itself; GetAddress names the active version."""
    new = Account.from_key(new_key).address
    with _app(path) as runtime:
        tx = _tx(b"\x11" * 20)
        raw = _sign(runtime, tx, key_id=key_id)
        assert _sender(raw) == new
        assert raw == _eth_account_raw(new_key, tx)
        assert runtime.app.get_key(CALLER, key_id).address == new
        sweep = _sign(runtime, _tx(bytes.fromhex(new[2:]), value=5),
                      address=bytes.fromhex(old[2:]))
        assert _sender(sweep) == old
        listed = {k.signer.key_id: k for k in runtime.app.list_keys(CALLER)}[key_id]
        assert [(v.version, v.state) for v in listed.versions][-1] == (active_version, "active")
        assert listed.versions[0].address == old


# --- keystore --------------------------------------------------------------------------------

def _keystore_config(tmp_path: Path, kdf: str = "scrypt") -> tuple[Path, str]:
    old = Account.create()
    folder = tmp_path / "keys"
    folder.mkdir()
    (folder / "hot.json").write_text(json.dumps(_keystore(old.key, kdf)))
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    path = _write(tmp_path, (
        f'[keys.hot]\nbackend = "keystore"\nkeystore_file = "{folder / "hot.json"}"\n'
        f'password_file = "{tmp_path / "pw"}"\n'))
    return path, old.address


@pytest.mark.parametrize("kdf", ["scrypt", "pbkdf2"])
def test_keystore_rotate_writes_a_new_file_with_the_same_password_and_kdf(tmp_path, kdf):
    path, old = _keystore_config(tmp_path, kdf)
    config = config_module.load(path)
    done = rotation.rotate_key(config, "hot", settle=0)
    written = tmp_path / "keys" / "hot@2.json"
    assert done.made == f"keystore file {written}"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    document = json.loads(written.read_text())
    original = json.loads((tmp_path / "keys" / "hot.json").read_text())
    assert document["crypto"]["kdf"] == kdf
    cost = "n" if kdf == "scrypt" else "c"
    assert document["crypto"]["kdfparams"][cost] == original["crypto"]["kdfparams"][cost]
    new_key = bytes(Account.decrypt(document, PASSWORD))
    assert (done.previous.address, done.active.address) == (old, Account.from_key(new_key).address)
    assert json.loads(_rows(path, "hot")[1].source)["keystore_file"] == str(written)
    _check_versions(path, "hot", old, new_key)
    # a second rotation: the next file, from the configured one's name
    third = rotation.rotate_key(config, "hot", settle=0)
    third_file = tmp_path / "keys" / "hot@3.json"
    third_key = bytes(Account.decrypt(json.loads(third_file.read_text()), PASSWORD))
    assert (third.active.version, third.active.address) == (3, Account.from_key(third_key).address)
    _check_versions(path, "hot", old, third_key, active_version=3)


def test_keystore_rotate_never_overwrites_and_names_what_it_left(tmp_path, monkeypatch):
    path, old = _keystore_config(tmp_path)
    config = config_module.load(path)
    leftover = tmp_path / "keys" / "hot@2.json"
    leftover.write_text("{}")
    with pytest.raises(FailedPrecondition, match=r"hot@2.json exists already .* never overwritten"):
        rotation.rotate_key(config, "hot", settle=0)
    assert leftover.read_text() == "{}" and _rows(path, "hot") == []
    leftover.unlink()
    # a store conflict after the file was written (another operator rotated meanwhile): the
    # error names the file and says it is not active; the other rotation stands
    other = Account.create()
    monkeypatch.setenv("ROT_OTHER", other.key.hex())
    raced = _write(tmp_path, path.read_text().split("\n", 2)[2]
                   + '[keys.other]\nbackend = "env"\nprivate_key_env = "ROT_OTHER"\n')
    from signer.admin import secret_keys

    create = secret_keys.create_keystore_version

    def create_while_another_rotates(*args: Any) -> Any:
        made = create(*args)
        rotation.rotate_key(config_module.load(raced), "hot", to="other", settle=0)
        return made

    monkeypatch.setattr(secret_keys, "create_keystore_version", create_while_another_rotates)
    with pytest.raises(FailedPrecondition) as caught:
        rotation.rotate_key(config_module.load(raced), "hot", settle=0)
    assert "version 2 is not the next one (another rotation ran meanwhile)" in str(caught.value)
    assert f"rotate had written keystore file {leftover}: it is NOT active" in str(caught.value)
    assert leftover.exists()
    assert [(r.version, r.address, r.state) for r in _rows(raced, "hot")] == [
        (1, old, "draining"), (2, other.address, "active")]


def test_keys_found_by_key_sources_are_refused_by_name(tmp_path):
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "agent1.json").write_text(json.dumps(_keystore(Account.create().key)))
    (tmp_path / "pw").write_text(PASSWORD)
    path = _write(tmp_path, (f'[key_sources.agents]\nbackend = "keystore"\nfolder = "{folder}"\n'
                             f'password_file = "{tmp_path / "pw"}"\n'))
    with pytest.raises(InvalidRequest, match=r"no key 'agent1' in \[keys\]: a key found by "
                                             r"\[key_sources\] cannot be rotated"):
        rotation.rotate_key(config_module.load(path), "agent1", settle=0)


# --- vault -----------------------------------------------------------------------------------

@pytest.fixture
def rotator(openbao, approle):  # type: ignore[no-untyped-def]
    """An AppRole that may read and write the agents' secrets (the operator's, for rotate)."""
    openbao.admin.sys.create_or_update_policy("agents-rotator", ROTATOR_POLICY)
    return approle("rotator", token_policies=["agents-reader", "agents-rotator"])


def _vault_config(tmp_path: Path, openbao: Any, role: Any, secret: str, extra: str = "") -> Path:
    return _write(tmp_path, (
        f'[keys.hot]\nbackend = "vault"\nurl = "{openbao.url}"\npath = "{secret}"\n'
        f'role_id_file = "{role.role_id_file}"\nsecret_id_file = "{role.secret_id_file}"\n{extra}'))


def _kv(openbao: Any, secret: str, version: int | None = None) -> tuple[dict[str, Any], int]:
    reply = openbao.admin.secrets.kv.v2.read_secret_version(
        path=secret, version=version, mount_point="secret", raise_on_deleted_version=True)
    return reply["data"]["data"], int(reply["data"]["metadata"]["version"])


def test_vault_rotate_writes_a_kv_version_and_pins_version_one(
        tmp_path, openbao, rotator, vault_secret, env_key):
    old = Account.from_key(env_key).address
    secret = vault_secret({"private_key": env_key, "owner": "team-a"})
    path = _vault_config(tmp_path, openbao, rotator, secret)
    config = config_module.load(path)
    done = rotation.rotate_key(config, "hot", settle=0)
    assert done.made == f"Vault KV version 2 of secret/{secret}"
    data, version = _kv(openbao, secret)
    assert version == 2 and data["owner"] == "team-a"  # the other fields copied
    assert data["private_key"].startswith("0x")  # the same form as before
    new_key = bytes.fromhex(data["private_key"][2:])
    assert done.active.address == Account.from_key(new_key).address
    v1, v2 = _rows(path, "hot")
    assert json.loads(v1.source)["version"] == 1 and json.loads(v2.source)["version"] == 2
    _check_versions(path, "hot", old, new_key)
    # again: KV version 3; a restart (a new runtime) still opens version 1 as itself, although
    # [keys.hot] (no version) now reads the latest KV version
    rotation.rotate_key(config, "hot", settle=0)
    third_data, third = _kv(openbao, secret)
    third_key = bytes.fromhex(third_data["private_key"][2:])
    assert third == 3
    _check_versions(path, "hot", old, third_key, active_version=3)
    with _app(path) as runtime:  # and after a reload that re-opens [keys.hot]
        path.write_text(path.read_text() + 'drain = "any"\n')
        assert runtime.app.reload_from(path)
        assert _sender(_sign(runtime, _tx(b"\x33" * 20), address=bytes.fromhex(old[2:]))) == old
        assert _sender(_sign(runtime, _tx(b"\x33" * 20), key_id="hot")) == \
            Account.from_key(third_key).address


def test_vault_rotate_keeps_a_keystore_field_with_its_password(
        tmp_path, openbao, rotator, vault_secret, env_key):
    secret = vault_secret({"keystore": json.dumps(_keystore(env_key)), "password": PASSWORD})
    path = _vault_config(tmp_path, openbao, rotator, secret,
                         'field = "keystore"\npassword_field = "password"\n')
    done = rotation.rotate_key(config_module.load(path), "hot", settle=0)
    data, _ = _kv(openbao, secret)
    assert data["password"] == PASSWORD
    document = json.loads(data["keystore"])
    assert document["crypto"]["kdfparams"]["n"] == LIGHT_SCRYPT_N
    new_key = decrypt_keystore(data["keystore"], PASSWORD, "test").secret
    assert done.active.address == Account.from_key(new_key).address
    _check_versions(path, "hot", Account.from_key(env_key).address, new_key)


def test_vault_rotate_check_and_set_refuses_a_concurrent_writer(
        tmp_path, openbao, rotator, vault_secret, env_key, monkeypatch):
    secret = vault_secret({"private_key": env_key})
    path = _vault_config(tmp_path, openbao, rotator, secret)
    from signer.backends.vault import VaultSession

    write = VaultSession.write

    def another_writer_first(self: VaultSession, *args: Any, **kwargs: Any) -> int:
        openbao.admin.secrets.kv.v2.create_or_update_secret(
            path=secret, secret={"private_key": "0x" + "22" * 32}, mount_point="secret")
        return write(self, *args, **kwargs)

    monkeypatch.setattr(VaultSession, "write", another_writer_first)
    with pytest.raises(FailedPrecondition, match=r"writing secret/agents/\S+: version 1 is no "
                                                 r"longer the latest .* nothing was written"):
        rotation.rotate_key(config_module.load(path), "hot", settle=0)
    assert _kv(openbao, secret)[1] == 2  # the other writer's version, nothing of ours
    # no version 2; version 1 is recorded pinned to KV version 1, so the other writer's key
    # does not become version 1 on the next start
    (v1,) = _rows(path, "hot")
    assert (v1.version, v1.state, json.loads(v1.source)["version"]) == (1, "active", 1)
    with _app(path) as runtime:
        assert _sender(_sign(runtime, _tx(b"\x11" * 20), key_id="hot")) == \
            Account.from_key(env_key).address


def test_vault_rotate_refusals(tmp_path, openbao, approle, vault_secret, env_key, monkeypatch):
    secret = vault_secret({"private_key": env_key})
    reader = approle()  # read-only: Vault refuses the write, nothing is written
    path = _vault_config(tmp_path, openbao, reader, secret)
    with pytest.raises(PermissionDenied, match=r"Vault refused writing secret/agents/\S+ "
                                               r"\(permission denied\) \(version 1 stays "
                                               r"active, now recorded in the store pinned to "
                                               r"what \[keys.hot\] named: KV version 1\)"):
        rotation.rotate_key(config_module.load(path), "hot", settle=0)
    assert _kv(openbao, secret)[1] == 1
    (v1,) = _rows(path, "hot")  # version 1 was pinned before the write was tried
    assert (v1.state, json.loads(v1.source)["version"]) == ("active", 1)
    # an address pin on a key that follows the latest version would fail the next start
    address = Account.from_key(env_key).address
    pinned = _vault_config(tmp_path, openbao, reader, secret, f'address = "{address}"\n')
    with pytest.raises(FailedPrecondition, match=r"pins address = .* Pin the version holding "
                                                 r"it \(version = N\) in \[keys.hot\] first"):
        rotation.rotate_key(config_module.load(pinned), "hot", settle=0)
    # version 1 recorded unpinned by an earlier `rotate --to`: a new KV version would replace it
    monkeypatch.setenv("ROT_ADOPTED", Account.create().key.hex())
    (tmp_path / "adopt").mkdir()
    adopted = _vault_config(tmp_path / "adopt", openbao, reader, secret,
                            '[keys.next]\nbackend = "env"\nprivate_key_env = "ROT_ADOPTED"\n')
    rotation.rotate_key(config_module.load(adopted), "hot", to="next", settle=0)
    with pytest.raises(FailedPrecondition, match=r"version 1 was recorded as \[keys.hot\] \(an "
                                                 r"earlier rotate --to\)"):
        rotation.rotate_key(config_module.load(adopted), "hot", settle=0)
    assert _kv(openbao, secret)[1] == 1


def test_vault_rotate_with_a_pinned_version_and_address(
        tmp_path, openbao, rotator, vault_secret, env_key):
    secret = vault_secret({"private_key": env_key})
    old = Account.from_key(env_key).address
    path = _vault_config(tmp_path, openbao, rotator, secret, f'version = 1\naddress = "{old}"\n')
    rotation.rotate_key(config_module.load(path), "hot", settle=0)
    assert _rows(path, "hot")[0].source == ""  # [keys.hot] names version 1 by itself
    data, _ = _kv(openbao, secret)
    _check_versions(path, "hot", old, bytes.fromhex(data["private_key"][2:]))


# --- aws-secret ------------------------------------------------------------------------------

def _aws_config(tmp_path: Path, admin: Any, secret: str, extra: str = "") -> Path:
    return _write(tmp_path, (
        f'[keys.hot]\nbackend = "aws-secret"\nsecret_id = "{secret}"\nregion = "{REGION}"\n'
        f'endpoint_url = "{admin.meta.endpoint_url}"\n{extra}'))


def test_aws_secret_rotate_puts_a_version_and_pins_each_by_version_id(
        tmp_path, secrets_admin, env_key):
    secret = f"agents/k{os.urandom(4).hex()}"
    first_id = secrets_admin.create_secret(Name=secret, SecretString=env_key[2:])["VersionId"]
    old = Account.from_key(env_key).address
    path = _aws_config(tmp_path, secrets_admin, secret)
    config = config_module.load(path)
    done = rotation.rotate_key(config, "hot", settle=0)
    current = secrets_admin.get_secret_value(SecretId=secret)
    assert done.made == f"secret {secret!r} version {current['VersionId']} (now AWSCURRENT)"
    assert not current["SecretString"].startswith("0x")  # the same form as before
    new_key = bytes.fromhex(current["SecretString"])
    assert done.active.address == Account.from_key(new_key).address
    v1, v2 = _rows(path, "hot")
    assert json.loads(v1.source)["version_id"] == first_id
    assert json.loads(v2.source)["version_id"] == current["VersionId"]
    _check_versions(path, "hot", old, new_key)
    rotation.rotate_key(config, "hot", settle=0)
    third_key = bytes.fromhex(secrets_admin.get_secret_value(SecretId=secret)["SecretString"])
    _check_versions(path, "hot", old, third_key, active_version=3)


def test_aws_secret_rotate_keeps_a_keystore_and_its_password_secret(
        tmp_path, secrets_admin, env_key):
    secret = f"agents/k{os.urandom(4).hex()}"
    password = f"pw/k{os.urandom(4).hex()}"
    secrets_admin.create_secret(Name=secret, SecretString=json.dumps(_keystore(env_key)))
    password_id = secrets_admin.create_secret(Name=password, SecretString=PASSWORD)["VersionId"]
    path = _aws_config(tmp_path, secrets_admin, secret, f'password_secret_id = "{password}"\n')
    done = rotation.rotate_key(config_module.load(path), "hot", settle=0)
    assert secrets_admin.get_secret_value(SecretId=password)["VersionId"] == password_id
    text = secrets_admin.get_secret_value(SecretId=secret)["SecretString"]
    assert json.loads(text)["crypto"]["kdfparams"]["n"] == LIGHT_SCRYPT_N
    new_key = decrypt_keystore(text, PASSWORD, "test").secret
    assert done.active.address == Account.from_key(new_key).address
    _check_versions(path, "hot", Account.from_key(env_key).address, new_key)


def test_aws_secret_rotate_from_the_cli_at_debug_logs_no_key(tmp_path, secrets_admin, env_key):
    """botocore logs request and response bodies at DEBUG (the secret's value, the new key
    PutSecretValue sends): the CLI keeps it at INFO whatever --log-level says."""
    import subprocess
    import sys

    secret = f"agents/k{os.urandom(4).hex()}"
    secrets_admin.create_secret(Name=secret, SecretString=env_key)
    path = _aws_config(tmp_path, secrets_admin, secret)
    done = subprocess.run(
        [sys.executable, "-m", "signer.cli", "--log-level", "DEBUG", "keys", "rotate", "hot",
         "--config", str(path)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    new_key = secrets_admin.get_secret_value(SecretId=secret)["SecretString"]
    assert new_key != env_key
    assert '"level": "DEBUG"' in output  # JSON logs (stderr is no terminal), DEBUG on
    for secret_text in (env_key[2:], new_key[2:]):
        assert secret_text.lower() not in output.lower()
    assert Account.from_key(new_key).address in output
