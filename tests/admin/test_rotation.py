"""Key versions in one process over a real store: rotate, drain, retire, and what each version
may sign; rotation in SoftHSM and the KMS emulator; the sweep rule against eth-abi encodings.
The many-replica load test is tests/test_rotation_load.py."""

import re

import pytest
from eth_abi import encode
from eth_account import Account

from signer import config as config_module
from signer.admin import rotation
from signer.errors import FailedPrecondition, InvalidRequest, KeyDraining, KeyRetired
from signer.eth.sweep import sweep_reason
from signer.store import open_store
from tests.support.rotation import CALLER
from tests.support.rotation import app as _app
from tests.support.rotation import sender as _sender
from tests.support.rotation import sign as _sign
from tests.support.rotation import tx as _tx
from tests.support.rotation import write_config as _write

ENV_KEYS = (
    '[keys.hot]\nbackend = "env"\nprivate_key_env = "ROT_OLD"\n{drain}'
    '[keys.next]\nbackend = "env"\nprivate_key_env = "ROT_NEW"\n'
)


@pytest.fixture
def two_env_keys(monkeypatch: pytest.MonkeyPatch) -> tuple[Account, Account]:
    old, new = Account.create(), Account.create()
    monkeypatch.setenv("ROT_OLD", old.key.hex())
    monkeypatch.setenv("ROT_NEW", new.key.hex())
    return old, new


def test_rotate_drain_retire_in_one_process(tmp_path, two_env_keys):
    old, new = two_env_keys
    path = _write(tmp_path, ENV_KEYS.format(drain=""))
    config = config_module.load(path)
    with _app(path) as runtime:
        assert _sender(_sign(runtime, _tx(b"\x11" * 20), key_id="hot")) == old.address
        done = rotation.rotate_key(config, "hot", to="next", settle=0)
        assert (done.previous.version, done.previous.address) == (1, old.address)
        assert (done.active.version, done.active.address, done.active.state) == (
            2, new.address, "active")
        # by key id: the active version; GetAddress and ListKeys say so
        assert _sender(_sign(runtime, _tx(b"\x11" * 20), key_id="hot")) == new.address
        assert runtime.app.get_key(CALLER, "hot").address == new.address
        listed = {k.signer.key_id: k for k in runtime.app.list_keys(CALLER)}["hot"]
        assert [(v.version, v.address, v.state) for v in listed.versions] == [
            (1, old.address, "draining"), (2, new.address, "active")]
        # by address, the draining version signs the sweep ...
        old_bytes, new_bytes = bytes.fromhex(old.address[2:]), bytes.fromhex(new.address[2:])
        sweep = _sign(runtime, _tx(new_bytes, value=5), address=old_bytes)
        assert _sender(sweep) == old.address
        token = bytes.fromhex("a9059cbb") + encode(["address", "uint256"], [new.address, 7])
        assert _sender(_sign(runtime, _tx(b"\x22" * 20, data=token), address=old_bytes)) == \
            old.address
        # ... and nothing else: neither another recipient nor a message
        with pytest.raises(KeyDraining) as caught:
            _sign(runtime, _tx(b"\x33" * 20, value=5), address=old_bytes)
        assert str(caught.value).startswith(
            f"key 'hot' version 1 ({old.address}) is draining since ")
        assert f"the sweep to the active version 2 ({new.address})" in str(caught.value)
        assert caught.value.code == "FAILED_PRECONDITION"
        with pytest.raises(KeyDraining, match="not messages, typed data or authorizations"), \
                runtime.app.signing(CALLER, "SignMessage", address=old_bytes) as request:
            request.sign_message(b"hi", 10)
        # the active version by address signs anything
        assert _sender(_sign(runtime, _tx(b"\x33" * 20), address=new_bytes)) == new.address
        # retire: refused by address, naming the retirement; the active one is untouched
        with pytest.raises(FailedPrecondition, match="is the active one: rotate first"):
            rotation.retire_key(config, "hot", 2, "no", settle=0)
        rotation.retire_key(config, "hot", 1, "swept, tx 0xabc", settle=0)
        with pytest.raises(KeyRetired) as caught:
            _sign(runtime, _tx(new_bytes, value=1), address=old_bytes)
        assert str(caught.value).startswith(f"key 'hot' version 1 ({old.address}) was retired at ")
        assert str(caught.value).endswith(": swept, tx 0xabc; it never signs again")
        with pytest.raises(FailedPrecondition, match="is retired already"):
            rotation.retire_key(config, "hot", 1, "again", settle=0)
        assert _sender(_sign(runtime, _tx(b"\x11" * 20), key_id="hot")) == new.address
    store = open_store(config.store.url)
    try:
        records = [r for r in (rotation_records(store)) if r["kind"] == "admin"]
    finally:
        store.close()
    rotate = next(r for r in records if r["action"] == "rotate")
    assert rotate["operator"] and rotate["key_id"] == "hot"
    details = rotate  # an admin record's details sit beside its action
    assert (details["old_address"], details["new_address"]) == (old.address, new.address)
    assert details["made"] == "adopted [keys.next]"
    retire = next(r for r in records if r["action"] == "retire")
    assert (retire["address"], retire["active_address"], retire["reason"]) == (
        old.address, new.address, "swept, tx 0xabc")


def rotation_records(store):  # type: ignore[no-untyped-def]
    import json

    return [json.loads(r.body) for w in store.writers() for r in store.audit_rows(w)]


@pytest.mark.parametrize("rule", ["any", "none"])
def test_drain_rule_any_and_none(tmp_path, two_env_keys, rule):
    old, new = two_env_keys
    path = _write(tmp_path, ENV_KEYS.format(drain=f'drain = "{rule}"\n'))
    rotation.rotate_key(config_module.load(path), "hot", to="next", settle=0)
    old_bytes = bytes.fromhex(old.address[2:])
    with _app(path) as runtime:
        if rule == "any":
            assert _sender(_sign(runtime, _tx(b"\x33" * 20), address=old_bytes)) == old.address
        else:
            with pytest.raises(KeyDraining, match=re.escape('signs nothing ([keys.hot] drain = "none")')):
                _sign(runtime, _tx(bytes.fromhex(new.address[2:]), value=1), address=old_bytes)


def test_draining_version_replaces_nonces_it_was_issued(tmp_path, two_env_keys):
    old, _ = two_env_keys
    path = _write(tmp_path, ENV_KEYS.format(drain=""))
    config = config_module.load(path)
    old_bytes = bytes.fromhex(old.address[2:])
    with _app(path) as runtime:
        for _ in range(3):  # the JSON-RPC door handed out nonces 0, 1, 2
            runtime.app.store.next_nonce(1, old_bytes, 0)
        rotation.rotate_key(config, "hot", to="next", settle=0)
        assert _sender(_sign(runtime, _tx(b"\x33" * 20, nonce=2), address=old_bytes)) == \
            old.address
        with pytest.raises(KeyDraining):
            _sign(runtime, _tx(b"\x33" * 20, nonce=3), address=old_bytes)


def test_rotate_refusals(tmp_path, two_env_keys):
    path = _write(tmp_path, ENV_KEYS.format(drain=""))
    config = config_module.load(path)
    with pytest.raises(InvalidRequest, match="uses the env backend, which cannot make keys"):
        rotation.rotate_key(config, "hot", settle=0)
    with pytest.raises(InvalidRequest, match="--to: no key 'nope' in the configuration"):
        rotation.rotate_key(config, "hot", to="nope", settle=0)
    with pytest.raises(InvalidRequest, match="--to: name another"):
        rotation.rotate_key(config, "hot", to="hot", settle=0)
    with pytest.raises(InvalidRequest, match="no key 'ghost' in the configuration"):
        rotation.rotate_key(config, "ghost", to="next", settle=0)
    with pytest.raises(FailedPrecondition, match="has no version 1 \\(rotate first\\)"):
        rotation.retire_key(config, "hot", 1, "x", settle=0)
    with pytest.raises(InvalidRequest, match="--reason: 1 to 512 printable characters"):
        rotation.retire_key(config, "hot", 1, " ", settle=0)
    rotation.rotate_key(config, "hot", to="next", settle=0)
    # adopting the same key again: its address is already a version
    with pytest.raises(FailedPrecondition, match="is already its version 2"):
        rotation.rotate_key(config, "hot", to="next", settle=0)


def test_drain_status_without_upstream(tmp_path, two_env_keys, capsys):
    from signer import cli

    old, new = two_env_keys
    path = _write(tmp_path, ENV_KEYS.format(drain=""))
    assert cli.main(["keys", "drain-status", "hot", "--config", str(path)]) == 0
    assert "was never rotated" in capsys.readouterr().out
    rotation.rotate_key(config_module.load(path), "hot", to="next", settle=0)
    assert cli.main(["keys", "drain-status", "hot", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"hot@1\t{old.address}\tdraining\t-\t-" in out
    assert f"hot@2\t{new.address}\tactive\t-\t-" in out
    assert "no [jsonrpc] upstream configured" in out
    assert cli.main(["keys", "list", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"hot\tenv\t{new.address}\tactive" in out and f"  hot@1\t{old.address}\tdraining" in out


def test_sweep_rule_against_eth_abi():
    old, active, other = b"\x01" * 20, b"\x02" * 20, b"\x03" * 20
    token = b"\x44" * 20

    def call(selector: str, types: list[str], values: list[object]) -> bytes:
        return bytes.fromhex(selector) + encode(types, values)

    assert sweep_reason(_tx(active, value=1), old, active) == "native value to the active address"
    assert sweep_reason(_tx(other, value=1), old, active) is None
    erc20 = call("a9059cbb", ["address", "uint256"], [active, 10])
    assert sweep_reason(_tx(token, data=erc20), old, active) == "token transfer to the active address"
    assert sweep_reason(_tx(token, data=call("a9059cbb", ["address", "uint256"], [other, 10])),
                        old, active) is None
    assert sweep_reason(_tx(token, value=1, data=erc20), old, active) is None  # value + call
    assert sweep_reason(_tx(token, data=erc20 + b"\x00"), old, active) is None  # not canonical
    nft = call("42842e0e", ["address", "address", "uint256"], [old, active, 7])
    assert sweep_reason(_tx(token, data=nft), old, active) is not None
    stolen = call("42842e0e", ["address", "address", "uint256"], [other, active, 7])
    assert sweep_reason(_tx(token, data=stolen), old, active) is None
    nft_data = call("b88d4fde", ["address", "address", "uint256", "bytes"], [old, active, 7, b"x"])
    assert sweep_reason(_tx(token, data=nft_data), old, active) is not None
    multi = call("f242432a", ["address", "address", "uint256", "uint256", "bytes"],
                 [old, active, 1, 5, b""])
    assert sweep_reason(_tx(token, data=multi), old, active) is not None
    approve = call("095ea7b3", ["address", "uint256"], [active, 10])
    assert sweep_reason(_tx(token, data=approve), old, active) is None


def test_rotate_in_softhsm_labels_the_new_key_and_retire_disables_signing(
        tmp_path, softhsm_token):
    from tests.support.fixtures_pkcs11 import generate_key

    generate_key(softhsm_token, "vault1")
    path = _write(tmp_path, (
        f'[keys.vault1]\nbackend = "pkcs11"\ntoken_label = "{softhsm_token.label}"\n'
        f'pin_file = "{softhsm_token.pin_file}"\nkey_label = "vault1"\n'))
    config = config_module.load(path)
    done = rotation.rotate_key(config, "vault1", settle=0)
    assert done.made == f"HSM key 'vault1@2' on token '{softhsm_token.label}'"
    from signer.admin import pkcs11_keys

    target = pkcs11_keys.Target(config.keys["vault1"].module, softhsm_token.label, None,  # type: ignore[union-attr]
                                softhsm_token.pin_file)
    labels = {k.label: k.address for k in pkcs11_keys.list_keys(target)}
    assert labels["vault1@2"] == done.active.address
    with _app(path) as runtime:
        new_sig = _sign(runtime, _tx(b"\x11" * 20), key_id="vault1")
        assert _sender(new_sig) == done.active.address
    rotation.retire_key(config, "vault1", 1, "moved", disable_in_backend=True, settle=0)
    # the token itself now refuses the old key (CKA_SIGN false), to any process
    from tests.support.fixtures_pkcs11 import open_signer

    with pytest.raises(FailedPrecondition, match="private key with label 'vault1' may not sign"):
        open_signer(softhsm_token, "vault1")


def test_rotate_in_kms_tags_a_new_key_and_moves_the_alias_only_when_asked(
        tmp_path, kms_emulator, kms_admin_client, make_kms_key):
    key = make_kms_key()
    kms_admin_client.create_alias(AliasName="alias/treasury", TargetKeyId=key)
    endpoint = kms_emulator.endpoint_url
    path = _write(tmp_path, (
        '[keys.treasury]\nbackend = "kms"\nkms_key_id = "alias/treasury"\n'
        f'region = "us-east-1"\nendpoint_url = "{endpoint}"\n'))
    config = config_module.load(path)
    first = rotation.rotate_key(config, "treasury", settle=0)
    assert kms_admin_client.describe_key(KeyId="alias/treasury")["KeyMetadata"]["KeyId"] == key
    arn = first.made.removeprefix("KMS key ")
    tags = kms_admin_client.list_resource_tags(KeyId=arn)["Tags"]
    assert {"TagKey": "wallet-signer:version", "TagValue": "treasury@2"} in tags
    second = rotation.rotate_key(config, "treasury", move_alias=True, settle=0)
    moved_to = kms_admin_client.describe_key(KeyId="alias/treasury")["KeyMetadata"]["Arn"]
    assert second.made == f"KMS key {moved_to} (alias alias/treasury moved to it)"
    with _app(path) as runtime:
        assert _sender(_sign(runtime, _tx(b"\x11" * 20), key_id="treasury")) == \
            second.active.address
        # version 2, by address, still drains
        v2 = bytes.fromhex(first.active.address[2:])
        to_active = bytes.fromhex(second.active.address[2:])
        assert _sender(_sign(runtime, _tx(to_active, value=1), address=v2)) == \
            first.active.address
        # version 1 was recorded by its ARN at the first rotation: moving the alias later
        # leaves it signing as itself
        v1 = bytes.fromhex(first.previous.address[2:])
        assert _sender(_sign(runtime, _tx(to_active, value=1), address=v1)) == \
            first.previous.address
    rotation.retire_key(config, "treasury", 2, "empty", disable_in_backend=True, settle=0)
    assert kms_admin_client.describe_key(KeyId=arn)["KeyMetadata"]["KeyState"] == "Disabled"


def test_move_alias_is_refused_when_version_one_was_recorded_by_its_alias(
        tmp_path, kms_emulator, make_kms_key, kms_admin_client):
    """A store written before version 1 was pinned by ARN holds version 1 as the alias: moving
    the alias would make version 1 another key, so rotate refuses and says what to pin."""
    from signer.admin.state import configured_store
    from signer.store import KeyVersionRow

    key = make_kms_key()
    kms_admin_client.create_alias(AliasName="alias/legacy", TargetKeyId=key)
    path = _write(tmp_path, (
        '[keys.legacy]\nbackend = "kms"\nkms_key_id = "alias/legacy"\n'
        f'region = "us-east-1"\nendpoint_url = "{kms_emulator.endpoint_url}"\n'))
    config = config_module.load(path)
    with configured_store(config) as store:
        store.record_first_version(KeyVersionRow("legacy", 1, Account.create().address,
                                                 "active", "", "", "2026-01-01T00:00:00Z"))
    with pytest.raises(FailedPrecondition, match=r"version 1's key ARN"):
        rotation.rotate_key(config, "legacy", move_alias=True, settle=0)
    assert kms_admin_client.describe_key(KeyId="alias/legacy")["KeyMetadata"]["KeyId"] == key
