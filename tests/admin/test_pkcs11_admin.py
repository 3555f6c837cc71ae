"""Provisioning through the CLI (`keys create|list|import --backend pkcs11`) and the dev default."""

import io
import logging
import os
import re
import subprocess

from eth_account import Account

from signer import cli
from signer.backends import pkcs11 as backend_module
from signer.config import SOFTHSM_MODULE
from tests.support.fixtures_pkcs11 import stanza_signer

SECRET = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


def run_cli(token, *args, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return cli.main(["keys", *args, "--backend", "pkcs11", "--token-label", token.label,
                     "--pin-file", str(token.pin_file)])


def private_key_attrs(token, label):
    from pkcs11 import Attribute, ObjectClass

    with backend_module.open_session(SOFTHSM_MODULE, token.label, token.pin) as session:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        names = ("TOKEN", "PRIVATE", "SENSITIVE", "EXTRACTABLE", "SIGN", "DECRYPT",
                 "DERIVE", "UNWRAP", "LOCAL", "NEVER_EXTRACTABLE")
        attrs = {name: key[getattr(Attribute, name)] for name in names}
        try:
            key[Attribute.VALUE]
        except Exception as exc:
            attrs["VALUE"] = type(exc).__name__
        else:
            attrs["VALUE"] = "READABLE"
        return attrs


def pkcs11_tool_objects(token):
    run = subprocess.run(["pkcs11-tool", "--module", str(SOFTHSM_MODULE), "--token-label",
                          token.label, "--login", "--pin", token.pin, "-O"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_create_key(softhsm_token, capsys):
    assert run_cli(softhsm_token, "create", "--label", "treasury") == 0
    out = capsys.readouterr().out
    address = re.search(r"address (0x[0-9a-fA-F]{40})", out).group(1)
    signer = stanza_signer(out, "treasury")
    try:
        assert signer.address == address
        signer.self_test()
    finally:
        signer.backend.close()
    assert private_key_attrs(softhsm_token, "treasury") == {
        "TOKEN": True, "PRIVATE": True, "SENSITIVE": True, "EXTRACTABLE": False, "SIGN": True,
        "DECRYPT": False, "DERIVE": False, "UNWRAP": False, "LOCAL": True,
        "NEVER_EXTRACTABLE": True, "VALUE": "AttributeSensitive"}
    objects = pkcs11_tool_objects(softhsm_token)
    private = objects[objects.index("Private Key Object"):]
    assert "sensitive, always sensitive, never extractable, local" in private
    assert re.search(r"Usage:\s+sign\n", private)


def test_duplicate_label_refused(softhsm_token, capsys):
    assert run_cli(softhsm_token, "create", "--label", "hot") == 0
    assert run_cli(softhsm_token, "create", "--label", "hot") == 2
    assert "already holds a key labelled 'hot'" in capsys.readouterr().err


def test_import_from_stdin_and_file(softhsm_token, capsys, monkeypatch, tmp_path):
    expected = Account.from_key(SECRET).address
    assert run_cli(softhsm_token, "import", "--label", "migrated", stdin=SECRET + "\n",
                   monkeypatch=monkeypatch) == 0
    out = capsys.readouterr().out
    assert expected in out
    signer = stanza_signer(out, "migrated")
    try:
        assert signer.address == expected
        signer.self_test()
    finally:
        signer.backend.close()
    attrs = private_key_attrs(softhsm_token, "migrated")
    assert attrs["VALUE"] == "AttributeSensitive"  # the key cannot be read back
    assert attrs["SENSITIVE"] is True and attrs["EXTRACTABLE"] is False
    assert attrs["LOCAL"] is False  # honest about its origin
    key_file = tmp_path / "key.hex"
    key_file.write_text(Account.create().key.hex())
    assert run_cli(softhsm_token, "import", "--label", "from-file", "--key-file",
                   str(key_file)) == 0
    assert SECRET.removeprefix("0x") not in capsys.readouterr().out


def test_list_keys_shows_origin(softhsm_token, capsys, monkeypatch):
    assert run_cli(softhsm_token, "create", "--label", "made") == 0
    assert run_cli(softhsm_token, "import", "--label", "brought", stdin=SECRET,
                   monkeypatch=monkeypatch) == 0
    capsys.readouterr()
    assert run_cli(softhsm_token, "list") == 0
    rows = {line.split("\t")[0]: line.split("\t") for line in capsys.readouterr().out.splitlines()}
    assert rows["made"][3] == "generated on token"
    assert rows["brought"][2] == Account.from_key(SECRET).address
    assert rows["brought"][3] == "imported"


def test_bad_key_input_not_echoed(softhsm_token, capsys, monkeypatch):
    secretish = "ab" * 31 + "zz"
    assert run_cli(softhsm_token, "import", "--label", "x", stdin=secretish,
                   monkeypatch=monkeypatch) == 2
    captured = capsys.readouterr()
    assert secretish not in captured.out + captured.err


def test_pin_never_in_output_or_logs(softhsm_token, capsys, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    pin = softhsm_token.pin
    monkeypatch.setenv("HSM_PIN", pin)
    assert cli.main(["--log-level", "DEBUG", "keys", "create", "--backend", "pkcs11",
                     "--label", "p", "--token-label", softhsm_token.label,
                     "--pin-env", "HSM_PIN"]) == 0
    monkeypatch.setenv("HSM_PIN", "999999")  # wrong PIN: the error must not show it either
    assert cli.main(["keys", "list", "--backend", "pkcs11", "--token-label",
                     softhsm_token.label, "--pin-env", "HSM_PIN"]) == cli.EXIT_BACKEND
    captured = capsys.readouterr()
    text = captured.out + captured.err + caplog.text
    assert "PIN incorrect" in captured.err
    assert pin not in text and "999999" not in text
    connection = backend_module.connect(SOFTHSM_MODULE, softhsm_token.label, pin)
    try:
        assert pin not in repr(connection) + repr(vars(connection).get("library"))
    finally:
        backend_module.disconnect(connection)


def test_development_default_is_a_softhsm_key(tmp_path, monkeypatch, softhsm_token):
    from signer.admin import development as defaults

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOFTHSM2_CONF", "/nonexistent")  # replaced by the project-local one
    config = defaults.development_config(tmp_path / ".wallet-signer")
    key = config.keys["default"]
    assert key.backend == "pkcs11"
    assert os.environ["SOFTHSM2_CONF"] == str(tmp_path / ".wallet-signer" / "softhsm2.conf")
    conf = (tmp_path / ".wallet-signer" / "softhsm2.conf").read_text()
    assert f"directories.tokendir = {tmp_path}/.wallet-signer/tokens" in conf
    assert os.stat(key.pin_file).st_mode & 0o777 == 0o600
    from signer.service import KeyRing

    first = KeyRing.from_config(config)
    address = first.get("default").address
    first.self_test()
    first.close()
    again = KeyRing.from_config(defaults.development_config(tmp_path / ".wallet-signer"))
    try:
        assert again.get("default").address == address  # created once, then reused
    finally:
        again.close()


def test_key_given_as_argument_is_refused_unechoed(softhsm_token, capsys):
    # argparse expands --key to --key-file: a key pasted there must not be echoed back
    assert run_cli(softhsm_token, "import", "--label", "x", "--key", SECRET) == 2
    captured = capsys.readouterr()
    assert "not the key" in captured.err
    assert SECRET.removeprefix("0x") not in captured.out + captured.err
