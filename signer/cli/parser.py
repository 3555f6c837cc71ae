"""The command line's grammar: every command, its flags and the function that runs it."""

import argparse
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeAlias

import signer.cli.client as client_commands
import signer.cli.operator as operator_commands
import signer.cli.serve as serve_command
from signer import config as config_module
from signer.cli.common import CONFIG_ENV, DESCRIPTION


class _Parser(argparse.ArgumentParser):
    """argparse quotes unrecognized arguments back: a key pasted on the command line must not
    reach the terminal's scrollback or a CI log through that."""

    def error(self, message: str) -> NoReturn:
        super().error(re.sub(r"(0x)?[0-9a-fA-F]{64}", "<a 32-byte hex value, redacted>", message))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wallet-signer",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument(
        "--log-format", choices=["json", "text"],
        help="log records as JSON lines or text (default: json unless stderr is a terminal)",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    _add_serve(commands)
    _add_keys(commands)
    _add_audit(commands)
    _add_store(commands)
    _add_policy(commands)
    _add_client_commands(commands)
    return parser


# `health` flags whose defaults may come from WALLET_SIGNER_HEALTH_<FLAG>: the image's
# HEALTHCHECK runs a bare `wallet-signer health` (docs/deploy/image.md). No config field is named
# HEALTH_*, so the config loader leaves these variables alone.
HEALTH_ENV_PREFIX = "WALLET_SIGNER_HEALTH_"
HEALTH_ENV_FLAGS = ("server", "timeout", "tls_ca", "tls_cert", "tls_key", "tls_server_name")

# what add_subparsers returns; each _add_* helper adds one command (group) to it
Commands: TypeAlias = "argparse._SubParsersAction[_Parser]"


def _add_serve(commands: Commands) -> None:
    serve = commands.add_parser("serve", help="run the gRPC signing service")
    _config_arg(serve)
    serve.add_argument(
        "--insecure-listen",
        action="store_true",
        help="allow a non-loopback listen address without TLS (only behind a TLS proxy)",
    )
    serve.set_defaults(run=serve_command.serve)


def _add_keys(commands: Commands) -> None:
    keys = commands.add_parser("keys", help="list, create, import, freeze or unfreeze keys")
    key_commands = keys.add_subparsers(required=True, metavar="ACTION")
    listing = key_commands.add_parser(
        "list", help="configured keys, or every key a backend holds (--backend)"
    )
    _config_arg(listing)
    listing.add_argument("--server", help="ask a running server (HOST:PORT) instead")
    _tls_args(listing)
    listing.add_argument("--backend", choices=["pkcs11", "kms"], help="list a backend's keys")
    _pkcs11_args(listing, "the configured key whose token to list (default: the first)")
    _kms_args(listing, alias=False)
    listing.set_defaults(run=operator_commands.keys_list)

    create = key_commands.add_parser("create", help="generate a key inside an HSM or KMS")
    _config_arg(create)
    create.add_argument("--backend", choices=["pkcs11", "kms"], required=True)
    _pkcs11_args(create, "label of the new key (CKA_LABEL; required)")
    _kms_args(create, alias=True)
    create.set_defaults(run=operator_commands.keys_create)

    imp = key_commands.add_parser(
        "import", help="move an existing key into an HSM or KMS (never from the command line)"
    )
    _config_arg(imp)
    imp.add_argument("--backend", choices=["pkcs11", "kms"], required=True)
    _pkcs11_args(imp, "label of the imported key (CKA_LABEL; required)")
    _kms_args(imp, alias=True)
    source = imp.add_argument_group("where the key comes from (default: a hex key on stdin)")
    source.add_argument("--key-file", type=Path, help="file holding the hex private key")
    source.add_argument("--from-keystore", type=Path, help="a V3 keystore file")
    source.add_argument("--password-file", type=Path, help="the keystore's password, in a file")
    source.add_argument("--password-env", help="the keystore's password, in this variable")
    source.add_argument(
        "--from-key", metavar="KEY_ID",
        help="a configured keystore, vault or aws-secret key (--config): e.g. a Vault path",
    )
    imp.set_defaults(run=operator_commands.keys_import)

    freeze = key_commands.add_parser(
        "freeze", help="refuse every signing request for a key, on every replica (audited)"
    )
    _config_arg(freeze)
    freeze.add_argument("key_id")
    freeze.add_argument("--reason", required=True, help="why (shown to callers and audited)")
    freeze.set_defaults(run=operator_commands.keys_freeze)

    unfreeze = key_commands.add_parser("unfreeze", help="let a frozen key sign again (audited)")
    _config_arg(unfreeze)
    unfreeze.add_argument("key_id")
    unfreeze.set_defaults(run=operator_commands.keys_unfreeze)

    rotate = key_commands.add_parser(
        "rotate", help="make a key's next version active; the old one drains (audited)"
    )
    _config_arg(rotate)
    rotate.add_argument("key_id")
    rotate.add_argument(
        "--to", help="adopt this [keys] entry as the next version instead of creating a key"
    )
    rotate.add_argument(
        "--move-alias", action="store_true",
        help="kms: point the key's alias at the new KMS key (default: left untouched)",
    )
    rotate.set_defaults(run=operator_commands.keys_rotate)

    retire = key_commands.add_parser(
        "retire", help="a draining version never signs again, on every replica (audited)"
    )
    _config_arg(retire)
    retire.add_argument("key_id")
    retire.add_argument("--version", type=int, required=True, help="the version to retire")
    retire.add_argument("--reason", required=True, help="why (shown to callers and audited)")
    retire.add_argument(
        "--disable-in-backend", action="store_true",
        help="also disable it in the backend (kms: DisableKey; pkcs11: CKA_SIGN false)",
    )
    retire.set_defaults(run=operator_commands.keys_retire)

    drain = key_commands.add_parser(
        "drain-status", help="a key's versions, with pending nonce and balance at the node"
    )
    _config_arg(drain)
    drain.add_argument("key_id")
    drain.set_defaults(run=operator_commands.keys_drain_status)

    reload = key_commands.add_parser(
        "reload", help="make a running server re-read its config (keys, clients, policies)"
    )
    reload.add_argument("--server", required=True, help="HOST:PORT of the server")
    reload.add_argument("--timeout", type=float, default=60.0, help="seconds")
    _tls_args(reload)
    reload.set_defaults(run=operator_commands.keys_reload)


def _add_audit(commands: Commands) -> None:
    audit = commands.add_parser("audit", help="verify or read the audit log")
    audit_commands = audit.add_subparsers(required=True, metavar="ACTION")
    verify = audit_commands.add_parser(
        "verify", help="check every record's hash chain: exit 0 if intact, 1 at the first bad one"
    )
    _config_arg(verify)
    verify.add_argument(
        "--resume", type=Path, metavar="FILE",
        help="check only what was added since the verification saved in FILE (its chain "
             "heads; created on first use, updated when the log is intact)",
    )
    verify.set_defaults(run=operator_commands.audit_verify)
    export = audit_commands.add_parser(
        "export", help="write the records older than DATE to a JSON-lines file (for prune)"
    )
    _config_arg(export)
    export.add_argument("--before", required=True, metavar="DATE",
                        help="ISO 8601 date or time, UTC unless it says otherwise")
    export.add_argument("--to", required=True, type=Path, metavar="FILE",
                        help="a new file (never overwritten)")
    export.set_defaults(run=operator_commands.audit_export)
    prune = audit_commands.add_parser(
        "prune", help="delete the records an export of the same DATE holds, leaving a "
                      "checkpoint record that verify proves the rest from (audited)",
    )
    _config_arg(prune)
    prune.add_argument("--before", required=True, metavar="DATE",
                       help="the same DATE the export was made with")
    prune.add_argument("--export", required=True, type=Path, metavar="FILE",
                       help="the file `audit export --before DATE` wrote")
    prune.set_defaults(run=operator_commands.audit_prune)
    tail = audit_commands.add_parser("tail", help="show the most recent records")
    _config_arg(tail)
    tail.add_argument("-n", type=int, default=20, help="how many records (default 20)")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.set_defaults(run=operator_commands.audit_tail)


def _add_store(commands: Commands) -> None:
    store = commands.add_parser("store", help="the shared state store")
    store_commands = store.add_subparsers(required=True, metavar="ACTION")
    migrate = store_commands.add_parser("migrate", help="create or upgrade the schema")
    _config_arg(migrate)
    migrate.set_defaults(run=operator_commands.store_migrate)


def _add_policy(commands: Commands) -> None:
    policy = commands.add_parser("policy", help="try and watch signing policies")
    actions = policy.add_subparsers(required=True, metavar="ACTION")
    check = actions.add_parser(
        "check", help="would a client's policy allow this request now? (a dry run, audited)"
    )
    _config_arg(check)
    check.add_argument("--client", required=True, help="the [clients.NAME] to judge for")
    what = check.add_mutually_exclusive_group(required=True)
    what.add_argument("--tx", type=Path, help="transaction JSON (as for `sign --tx`)")
    what.add_argument("--message", help="an EIP-191 message (UTF-8 text)")
    what.add_argument("--typed-data", type=Path, help="EIP-712 JSON (eth_signTypedData_v4)")
    what.add_argument("--authorization", type=Path,
                      help='EIP-7702 authorization JSON {"chainId", "address", "nonce"}')
    check.add_argument(
        "--address", help="the signing key's address, for $self (default: the tx's `from`)"
    )
    check.set_defaults(run=operator_commands.policy_check)
    budgets = actions.add_parser("budgets", help="every budget: spent / limit / window")
    _config_arg(budgets)
    budgets.add_argument("--client", help="only this client")
    budgets.set_defaults(run=operator_commands.policy_budgets)


def _add_client_commands(commands: Commands) -> None:
    address = commands.add_parser("address", help="print the address of a configured key")
    _config_arg(address)
    address.add_argument("key_id")
    address.add_argument("--server", help="ask a running server (HOST:PORT) instead")
    _tls_args(address)
    address.set_defaults(run=client_commands.address)

    health = commands.add_parser(
        "health", help="exit 0 if a running server is SERVING",
        epilog=f"Each flag's default may come from {HEALTH_ENV_PREFIX}<FLAG> in the environment "
        f"(e.g. {HEALTH_ENV_PREFIX}TLS_CERT): how a container's HEALTHCHECK, which has no "
        "flags of its own, reaches a server under mTLS.",
    )
    health.add_argument("--server", default=config_module.DEFAULT_LISTEN, help="HOST:PORT")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds")
    _tls_args(health)
    health.set_defaults(run=client_commands.health,
                        **_env_defaults(HEALTH_ENV_PREFIX, HEALTH_ENV_FLAGS))

    sign = commands.add_parser("sign", help="ask a running server to sign a transaction")
    sign.add_argument("--key", required=True, help="key_id to sign with")
    sign.add_argument(
        "--tx", required=True, type=Path, help="transaction JSON (eth-account dict; - for stdin)"
    )
    sign.add_argument("--server", default=config_module.DEFAULT_LISTEN, help="HOST:PORT")
    sign.add_argument("--timeout", type=float, default=30.0, help="seconds")
    _tls_args(sign)
    sign.set_defaults(run=client_commands.sign)


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=os.environ.get(CONFIG_ENV),
        help=f"TOML config file (default: ${CONFIG_ENV}, else the embedded development default)",
    )


def _env_defaults(prefix: str, dests: Sequence[str]) -> dict[str, str]:
    """Flag defaults from PREFIX<DEST> environment variables (set and not empty); argparse
    converts them with the flag's type, as if given on the command line."""
    values = {dest: os.environ.get(prefix + dest.upper(), "") for dest in dests}
    return {dest: value for dest, value in values.items() if value}


def _tls_args(parser: argparse.ArgumentParser) -> None:
    """How a client command reaches the server: plaintext, TLS (--tls-ca) or mTLS."""
    parser.add_argument("--tls-ca", type=Path, help="CA certificate that signed the server's")
    parser.add_argument("--tls-cert", type=Path, help="client certificate (mTLS)")
    parser.add_argument("--tls-key", type=Path, help="client private key (mTLS)")
    parser.add_argument(
        "--tls-server-name", help="name to expect in the server certificate (default: the host)"
    )


def _pkcs11_args(parser: argparse.ArgumentParser, label_help: str) -> Any:
    """`--backend pkcs11` options, in their own help group (returned, for more of them)."""
    group = parser.add_argument_group("--backend pkcs11")
    group.add_argument("--label", help=label_help)
    group.add_argument("--token-label", help="token label (default: from config)")
    group.add_argument("--module", type=Path, help="library path (default: SoftHSM)")
    group.add_argument("--pin-env", help="environment variable holding the user PIN")
    group.add_argument("--pin-file", type=Path, help="file holding the user PIN")
    return group


def _kms_args(parser: argparse.ArgumentParser, *, alias: bool) -> None:
    """`--backend kms` options, in their own help group."""
    group = parser.add_argument_group("--backend kms")
    if alias:
        group.add_argument("--alias", help="alias name, with or without alias/ (required)")
    group.add_argument("--region", help="AWS region")
    group.add_argument("--endpoint-url", help="endpoint (emulators, VPC endpoints)")
