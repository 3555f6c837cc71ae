"""`wallet-signer keys create|list --backend kms` against the emulator, through the CLI."""

import tomllib
import uuid

import pytest

from signer.cli import main
from signer.config import validate
from signer.service import KeyRing


@pytest.fixture
def cli(kms_emulator, capsys):
    def run(*argv):
        code = main(["keys", *argv, "--backend", "kms", "--region", "us-east-1",
                     "--endpoint-url", kms_emulator.endpoint_url])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _alias():
    return f"ops-{uuid.uuid4().hex[:8]}"


def test_create_prints_address_and_a_working_config_stanza(cli, kms_admin_client):
    name = _alias()
    code, out, _ = cli("create", "--alias", name)
    assert code == 0
    address = next(line.split()[1] for line in out.splitlines() if line.startswith("address:"))
    stanza = tomllib.loads(out[out.index("[keys."):])
    assert stanza == {"keys": {name: {
        "backend": "kms", "kms_key_id": f"alias/{name}", "region": "us-east-1",
        "endpoint_url": kms_admin_client.meta.endpoint_url}}}
    keyring = KeyRing.from_config(validate(stanza, "printed stanza"))
    assert keyring.get(name).address == address
    keyring.get(name).self_test()

    meta = kms_admin_client.describe_key(KeyId=f"alias/{name}")["KeyMetadata"]
    assert (meta["KeySpec"], meta["KeyUsage"]) == ("ECC_SECG_P256K1", "SIGN_VERIFY")
    tags = kms_admin_client.list_resource_tags(KeyId=meta["KeyId"])["Tags"]
    assert {"TagKey": "wallet-signer", "TagValue": "ethereum-signing"} in tags
    assert {"TagKey": "wallet-signer:alias", "TagValue": f"alias/{name}"} in tags


def test_create_refuses_an_existing_alias(cli):
    name = _alias()
    assert cli("create", "--alias", name)[0] == 0
    code, out, err = cli("create", "--alias", f"alias/{name}")
    assert code == 2 and out == ""
    assert f"alias/{name} already exists" in err


@pytest.mark.parametrize("alias", [None, "aws/reserved", "bad name!"])
def test_create_needs_a_valid_alias(cli, alias):
    code, _, err = cli("create", *(("--alias", alias) if alias else ()))
    assert code == 2
    assert "--alias" in err


def test_list_shows_only_ethereum_keys_with_aliases_and_addresses(cli, make_kms_key,
                                                                  kms_admin_client):
    name = _alias()
    _, created, _ = cli("create", "--alias", name)
    address = next(line.split()[1] for line in created.splitlines() if line.startswith("address:"))
    other_curve = make_kms_key("ECC_NIST_P256")
    disabled = make_kms_key()
    kms_admin_client.disable_key(KeyId=disabled)
    code, out, _ = cli("list")
    assert code == 0
    rows = {line.split("\t")[0]: line.split("\t") for line in out.splitlines()}
    key_id = kms_admin_client.describe_key(KeyId=f"alias/{name}")["KeyMetadata"]["KeyId"]
    assert rows[key_id] == [key_id, "Enabled", address, f"alias/{name}"]
    assert rows[disabled] == [disabled, "Disabled", "-", "-"]
    assert other_curve not in rows


def test_list_takes_region_and_endpoint_from_config(kms_emulator, make_kms_key, capsys, tmp_path):
    key_id = make_kms_key()
    config = tmp_path / "signer.toml"
    config.write_text(f'[keys.ops]\nbackend = "kms"\nkms_key_id = "alias/x"\n'
                      f'region = "us-east-1"\nendpoint_url = "{kms_emulator.endpoint_url}"\n')
    assert main(["keys", "list", "--backend", "kms", "--config", str(config)]) == 0
    assert f"{key_id}\tEnabled\t0x" in capsys.readouterr().out
