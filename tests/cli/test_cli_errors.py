"""What the command line refuses, and its exit codes: 2 bad configuration or input (flags
included), 3 a backend failed, 1 the server refused (tests/cli/test_cli.py)."""

import socket

import pytest

from signer import cli
from signer.errors import (
    AccessDenied,
    BackendUnavailable,
    ConfigError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidRequest,
    KeyFrozen,
    KeyNotFound,
    PermissionDenied,
    StoreUnavailable,
)


@pytest.mark.parametrize(("argv", "message"), [
    (["keys", "create", "--backend", "kms", "--alias", "a", "--label", "x"],
     "--label applies to --backend pkcs11, not to --backend kms"),
    (["keys", "create", "--backend", "kms", "--alias", "a", "--pin-file", "/p"],
     "--pin-file applies to --backend pkcs11, not to --backend kms"),
    (["keys", "create", "--backend", "pkcs11", "--label", "x", "--alias", "a"],
     "--alias applies to --backend kms, not to --backend pkcs11"),
    (["keys", "create", "--backend", "pkcs11", "--label", "x", "--region", "eu-west-1"],
     "--region applies to --backend kms, not to --backend pkcs11"),
    (["keys", "list", "--backend", "kms", "--token-label", "t"],
     "--token-label applies to --backend pkcs11, not to --backend kms"),
    (["keys", "list", "--backend", "pkcs11", "--endpoint-url", "http://127.0.0.1:1"],
     "--endpoint-url applies to --backend kms, not to --backend pkcs11"),
    (["keys", "list", "--label", "x"], "--label applies only with --backend pkcs11"),
    (["keys", "list", "--region", "us-east-1"], "--region applies only with --backend kms"),
    (["keys", "list", "--backend", "kms", "--server", "127.0.0.1:1"],
     "--server asks a running server, --backend the backend: not both"),
    (["keys", "list", "--tls-ca", "ca.crt"], "--tls-ca applies only with --server"),
    (["address", "hot", "--tls-server-name", "signer"],
     "--tls-server-name applies only with --server"),
    (["keys", "create", "--backend", "kms"], "--backend kms: --alias NAME is required"),
    (["keys", "create", "--backend", "pkcs11"], "--backend pkcs11: --label NAME is required"),
    (["keys", "import", "--backend", "pkcs11"], "--backend pkcs11: --label NAME is required"),
    (["keys", "import", "--backend", "kms"], "--backend kms: --alias NAME is required"),
    # since keys import takes --backend kms too (issue 17), these are another backend's flags
    (["keys", "import", "--backend", "pkcs11", "--label", "x", "--alias", "a"],
     "--alias applies to --backend kms, not to --backend pkcs11"),
    (["keys", "import", "--backend", "kms", "--alias", "a", "--label", "x"],
     "--label applies to --backend pkcs11, not to --backend kms"),
])
def test_flags_that_do_not_apply_are_errors_before_anything_runs(argv, message, capsys):
    # --config names no file: the flags are judged before any config, token or network
    assert cli.main([*argv, "--config", "/nonexistent/signer.toml"]) == cli.EXIT_INPUT
    assert capsys.readouterr().err == f"wallet-signer: {message}\n"


@pytest.mark.parametrize("argv", [
    ["keys", "list", "--backend", "kms", "--alias", "a"],
    ["address", "hot", "--label", "x"],
])
def test_flags_a_command_never_takes_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(("error", "code"), [
    (InvalidRequest("x"), 2), (ConfigError("x"), 2), (KeyNotFound("x"), 2),
    (AccessDenied("x"), 2),
    (BackendUnavailable("x"), 3), (StoreUnavailable("x"), 3), (PermissionDenied("x"), 3),
    (FailedPrecondition("x"), 3), (KeyFrozen("x"), 3), (DeadlineExceeded("x"), 3),
])
def test_exit_code_by_error_kind(error, code):
    assert cli.exit_code(error) == code


def test_unreachable_kms_exits_3(kms_emulator, capsys):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = cli.main(["keys", "list", "--backend", "kms", "--region", "us-east-1",
                     "--endpoint-url", f"http://127.0.0.1:{port}"])
    assert code == cli.EXIT_BACKEND
    assert "KMS endpoint unreachable or timed out" in capsys.readouterr().err


def test_disabled_kms_key_in_config_exits_3(kms_faults, make_kms_key, tmp_path, capsys):
    # moto answers GetPublicKey for a disabled key; AWS refuses it with DisabledException
    key_id = make_kms_key()
    kms_faults.add_fault(operation="GetPublicKey", key=key_id, error="DisabledException")
    config = tmp_path / "signer.toml"
    config.write_text(f'[keys.ops]\nbackend = "kms"\nkms_key_id = "{key_id}"\n'
                      f'region = "us-east-1"\nendpoint_url = "{kms_faults.endpoint_url}"\n')
    assert cli.main(["address", "ops", "--config", str(config)]) == cli.EXIT_BACKEND
    err = capsys.readouterr().err
    assert err.startswith(f"wallet-signer: keys.ops ({key_id}): ") and "DisabledException" in err


def test_missing_hsm_token_exits_3_and_bad_pin_source_exits_2(softhsm_token, tmp_path, capsys):
    config = tmp_path / "signer.toml"
    stanza = ('[keys.hsm]\nbackend = "pkcs11"\ntoken_label = "{token}"\n'
              'pin_file = "{pin}"\nkey_label = "k"\n')
    config.write_text(stanza.format(token="no-such-token", pin=softhsm_token.pin_file))
    assert cli.main(["serve", "--config", str(config)]) == cli.EXIT_BACKEND
    assert "keys.hsm: no token labelled 'no-such-token'" in capsys.readouterr().err
    config.write_text(stanza.format(token=softhsm_token.label, pin=tmp_path / "absent"))
    assert cli.main(["serve", "--config", str(config)]) == cli.EXIT_INPUT
    assert "keys.hsm: cannot read" in capsys.readouterr().err
