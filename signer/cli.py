"""wallet-signer command line: serve, keys, address, sign, health, audit, store.

Exit codes: 0 success; 1 the server refused (or the audit chain is broken); 2 bad configuration
or input; 3 a backend or the state store failed (unreachable, refused us, key unusable, out of
time).
"""

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeAlias

import grpc

from signer import config as config_module
from signer import logs
from signer.config import Config
from signer.errors import (
    BackendUnavailable,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidRequest,
    PermissionDenied,
    SignerError,
)

log = logging.getLogger("signer")

CONFIG_ENV = "WALLET_SIGNER_CONFIG"

EXIT_REFUSED = 1  # a server answered with an error status (printed)
EXIT_INPUT = 2  # bad configuration or input: the message names the field or flag
EXIT_BACKEND = 3  # a backend (HSM, KMS) or the state store failed or refused us
_BACKEND_FAILURES = (BackendUnavailable, PermissionDenied, FailedPrecondition, DeadlineExceeded)

# The provisioning flags of each backend: any other backend's flag is an error, not ignored.
BACKEND_FLAGS = {
    "pkcs11": ("--label", "--token-label", "--module", "--pin-env", "--pin-file"),
    "kms": ("--alias", "--region", "--endpoint-url"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logs.configure(args.log_format, args.log_level)
    try:
        result: int = args.run(args)
        return result
    except SignerError as exc:
        print(f"wallet-signer: {exc}", file=sys.stderr)
        return exit_code(exc)
    except grpc.RpcError as exc:  # a client command whose server refused or is unreachable
        print(f"wallet-signer: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130


def exit_code(exc: SignerError) -> int:
    """3 when a backend or the store failed (retry, or fix access or the key), else 2."""
    return EXIT_BACKEND if isinstance(exc, _BACKEND_FAILURES) else EXIT_INPUT


class _Parser(argparse.ArgumentParser):
    """argparse quotes unrecognized arguments back: a key pasted on the command line must not
    reach the terminal's scrollback or a CI log through that."""

    def error(self, message: str) -> NoReturn:
        super().error(re.sub(r"(0x)?[0-9a-fA-F]{64}", "<a 32-byte hex value, redacted>", message))


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wallet-signer",
        description=__doc__,
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
    serve.set_defaults(run=_serve)


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
    listing.set_defaults(run=_keys_list)

    create = key_commands.add_parser("create", help="generate a key inside an HSM or KMS")
    _config_arg(create)
    create.add_argument("--backend", choices=["pkcs11", "kms"], required=True)
    _pkcs11_args(create, "label of the new key (CKA_LABEL; required)")
    _kms_args(create, alias=True)
    create.set_defaults(run=_keys_create)

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
    imp.set_defaults(run=_keys_import)

    freeze = key_commands.add_parser(
        "freeze", help="refuse every signing request for a key, on every replica (audited)"
    )
    _config_arg(freeze)
    freeze.add_argument("key_id")
    freeze.add_argument("--reason", required=True, help="why (shown to callers and audited)")
    freeze.set_defaults(run=_keys_freeze)

    unfreeze = key_commands.add_parser("unfreeze", help="let a frozen key sign again (audited)")
    _config_arg(unfreeze)
    unfreeze.add_argument("key_id")
    unfreeze.set_defaults(run=_keys_unfreeze)


def _add_audit(commands: Commands) -> None:
    audit = commands.add_parser("audit", help="verify or read the audit log")
    audit_commands = audit.add_subparsers(required=True, metavar="ACTION")
    verify = audit_commands.add_parser(
        "verify", help="check every record's hash chain: exit 0 if intact, 1 at the first bad one"
    )
    _config_arg(verify)
    verify.set_defaults(run=_audit_verify)
    tail = audit_commands.add_parser("tail", help="show the most recent records")
    _config_arg(tail)
    tail.add_argument("-n", type=int, default=20, help="how many records (default 20)")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.set_defaults(run=_audit_tail)


def _add_store(commands: Commands) -> None:
    store = commands.add_parser("store", help="the shared state store")
    store_commands = store.add_subparsers(required=True, metavar="ACTION")
    migrate = store_commands.add_parser("migrate", help="create or upgrade the schema")
    _config_arg(migrate)
    migrate.set_defaults(run=_store_migrate)


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
    check.add_argument(
        "--address", help="the signing key's address, for $self (default: the tx's `from`)"
    )
    check.set_defaults(run=_policy_check)
    budgets = actions.add_parser("budgets", help="every budget: spent / limit / window")
    _config_arg(budgets)
    budgets.add_argument("--client", help="only this client")
    budgets.set_defaults(run=_policy_budgets)


def _add_client_commands(commands: Commands) -> None:
    address = commands.add_parser("address", help="print the address of a configured key")
    _config_arg(address)
    address.add_argument("key_id")
    address.add_argument("--server", help="ask a running server (HOST:PORT) instead")
    _tls_args(address)
    address.set_defaults(run=_address)

    health = commands.add_parser("health", help="exit 0 if a running server is SERVING")
    health.add_argument("--server", default=config_module.DEFAULT_LISTEN, help="HOST:PORT")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds")
    _tls_args(health)
    health.set_defaults(run=_health)

    sign = commands.add_parser("sign", help="ask a running server to sign a transaction")
    sign.add_argument("--key", required=True, help="key_id to sign with")
    sign.add_argument(
        "--tx", required=True, type=Path, help="transaction JSON (eth-account dict; - for stdin)"
    )
    sign.add_argument("--server", default=config_module.DEFAULT_LISTEN, help="HOST:PORT")
    sign.add_argument("--timeout", type=float, default=30.0, help="seconds")
    _tls_args(sign)
    sign.set_defaults(run=_sign)


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=os.environ.get(CONFIG_ENV),
        help=f"TOML config file (default: ${CONFIG_ENV}, else the embedded development default)",
    )


def _tls_args(parser: argparse.ArgumentParser) -> None:
    """How a client command reaches the server: plaintext, TLS (--tls-ca) or mTLS."""
    parser.add_argument("--tls-ca", type=Path, help="CA certificate that signed the server's")
    parser.add_argument("--tls-cert", type=Path, help="client certificate (mTLS)")
    parser.add_argument("--tls-key", type=Path, help="client private key (mTLS)")
    parser.add_argument(
        "--tls-server-name", help="name to expect in the server certificate (default: the host)"
    )


def _channel(args: argparse.Namespace, target: str) -> grpc.Channel:
    from signer.client import TlsFiles, open_channel

    tls = TlsFiles(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
    try:
        return open_channel(target, tls)
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"TLS options: {exc}") from None


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


def _check_backend_flags(args: argparse.Namespace) -> None:
    """Refuse a flag of another backend (or of none) instead of silently ignoring it."""
    chosen = args.backend
    for backend, flags in BACKEND_FLAGS.items():
        if backend == chosen:
            continue
        for flag in flags:
            if getattr(args, flag.removeprefix("--").replace("-", "_"), None) is not None:
                if chosen is None:
                    raise InvalidRequest(f"{flag} applies only with --backend {backend}")
                raise InvalidRequest(
                    f"{flag} applies to --backend {backend}, not to --backend {chosen}"
                )


def _check_tls_flags(args: argparse.Namespace) -> None:
    """TLS options say how to reach a server: without --server they would be ignored."""
    if args.server:
        return
    for flag in ("--tls-ca", "--tls-cert", "--tls-key", "--tls-server-name"):
        if getattr(args, flag.removeprefix("--").replace("-", "_")) is not None:
            raise InvalidRequest(f"{flag} applies only with --server")


def _required(value: str | None, flag: str, backend: str) -> str:
    if not value:
        raise InvalidRequest(f"--backend {backend}: {flag} NAME is required")
    return value


def load_config(path: Path | None) -> Config:
    """The operator's config, or the embedded development default when none is given."""
    if path is not None:
        return config_module.load(path)
    from signer.admin.development import development_config

    return development_config()


def _serve(args: argparse.Namespace) -> int:
    from signer.app.application import Application
    from signer.grpc.server import SignerServer, serve_forever
    from signer.service import KeyRing

    config = load_config(args.config)
    keyring = KeyRing.from_config(config)
    if len(keyring) == 0:
        log.warning("no keys configured: every signing request will answer NOT_FOUND")
    try:
        app = Application.open(config, keyring)
    except BaseException:
        keyring.close()
        raise
    listener = None
    try:
        listener = _metrics_listener(config)
        server = SignerServer(app, config.server, allow_insecure=args.insecure_listen)
    except BaseException:
        if listener is not None:
            listener.close()
        keyring.close()
        app.close()
        raise
    if args.config is not None:
        path = args.config
        server.reload_hooks.append(lambda: app.reload_from(path))
    jsonrpc = None
    if config.jsonrpc is not None:
        from signer.jsonrpc.server import JsonRpcListener

        try:
            jsonrpc = JsonRpcListener(app, config.jsonrpc, server_config=config.server,
                                      tls=server.tls, allow_insecure=args.insecure_listen)
        except BaseException:
            server.stop(0)
            if listener is not None:
                listener.close()
            raise
        jsonrpc.start()
    try:
        serve_forever(server)
    finally:
        if jsonrpc is not None:
            jsonrpc.stop(0)
        if listener is not None:
            listener.close()
    return 0


def _metrics_listener(config: Config) -> Any:
    """The Prometheus listener of `[metrics]`, or None when the table is absent."""
    if config.metrics is None:
        return None
    from signer.metrics import MetricsListener

    if not config.metrics.is_loopback():
        log.warning("metrics.listen %s is not a loopback address: anyone who can reach it can "
                    "read the metrics (no secrets, but key ids and load)", config.metrics.listen)
    return MetricsListener(config.metrics.listen)


def _keys_list(args: argparse.Namespace) -> int:
    _check_backend_flags(args)
    _check_tls_flags(args)
    if args.backend is not None and args.server:
        raise InvalidRequest("--server asks a running server, --backend the backend: not both")
    if args.backend == "pkcs11":
        return _pkcs11_list(args)
    if args.backend == "kms":
        return _kms_list(args)
    pins: list[tuple[str, str]] = []  # local keys without `address`: the pin line to paste
    if args.server:
        from signer.v1 import signer_pb2 as pb

        reply = _stub(_channel(args, args.server)).ListKeys(pb.ListKeysRequest(), timeout=10)
        rows = [
            (k.key_id, k.backend, k.address, _frozen_column(k.frozen_reason if k.frozen else None))
            for k in reply.keys
        ]
    else:
        from signer.admin.state import frozen_keys
        from signer.service import KeyRing

        config = load_config(args.config)
        frozen = frozen_keys(config)
        keyring = KeyRing.from_config(config)
        try:
            rows = [
                (
                    s.key_id, s.backend_name, s.address,
                    _frozen_column(frozen[s.key_id].reason if s.key_id in frozen else None),
                )
                for s in keyring
            ]
        finally:
            keyring.close()
        pins = [(k, a) for k, _, a, _ in rows if k in config.keys and not config.keys[k].address]
    for key_id, backend, address, state in rows:
        print(f"{key_id}\t{backend}\t{address}\t{state}")
    if pins:
        print("\n# address pinning: paste each line under its [keys.ID] table")
        for key_id, address in pins:
            print(f'[keys.{key_id}]\naddress = "{address}"')
    return 0


def _frozen_column(reason: str | None) -> str:
    return "active" if reason is None else f"FROZEN: {reason}"


def _keys_freeze(args: argparse.Namespace) -> int:
    from signer.admin.state import freeze_key

    freeze_key(load_config(args.config), args.key_id, args.reason)
    print(f"key {args.key_id!r} is frozen on every replica sharing the store (within 1 s)")
    return 0


def _keys_unfreeze(args: argparse.Namespace) -> int:
    from signer.admin.state import unfreeze_key

    if unfreeze_key(load_config(args.config), args.key_id):
        print(f"key {args.key_id!r} is no longer frozen")
    else:
        print(f"key {args.key_id!r} was not frozen")
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    from signer.admin.state import verify_audit

    report = verify_audit(load_config(args.config))
    if not report.ok:
        print(f"audit log TAMPERED: {report.problem} ({report.records} records intact before it)")
        return 1
    print(f"audit log intact: {report.records} records in {report.chains} chains")
    if report.incomplete:
        shown = ", ".join(report.incomplete[:10]) + (" ..." if len(report.incomplete) > 10 else "")
        print(
            f"{len(report.incomplete)} incomplete: an intent without an outcome (the process "
            f"stopped while signing; the caller got no signature from it): {shown}"
        )
    return 0


def _audit_tail(args: argparse.Namespace) -> int:
    from signer.admin.state import tail_audit

    if not 1 <= args.n <= 100_000:
        raise InvalidRequest("-n: between 1 and 100000")
    for item in tail_audit(load_config(args.config), args.n):
        if args.json:
            print(json.dumps({"writer": item.writer, "seq": item.seq, **item.record}))
        else:
            print(_audit_line(item.record))
    return 0


def _audit_line(record: dict[str, Any]) -> str:
    fields = ("kind", "method", "key_id", "client", "decision", "status", "request_id")
    text = " ".join(f"{f}={record[f]}" for f in fields if record.get(f) not in (None, ""))
    reason = f" reason={json.dumps(record['reason'])}" if record.get("reason") else ""
    return f"{record.get('at', '?')} {text}{reason}"


def _store_migrate(args: argparse.Namespace) -> int:
    from signer.admin.state import migrate_store

    version = migrate_store(load_config(args.config))
    print(f"store schema at version {version}")
    return 0


def _policy_check(args: argparse.Namespace) -> int:
    from signer.admin import policy
    from signer.eth.fields import parse_address

    method, request, sender = policy.load_request(args.tx, args.message, args.typed_data)
    address = args.address or sender
    self_address = parse_address(address, "--address") if address else bytes(20)
    evaluation = policy.check(load_config(args.config), args.client, method, request,
                              self_address)
    verdict = "allowed" if evaluation.allowed else "denied"
    print(verdict + (f" (rule {evaluation.rule_id})" if evaluation.rule_id else ""))
    print(evaluation.reason)
    for b in evaluation.budgets:
        print(f"budget {b.name}: {b.spent} of {b.limit} spent in the last {b.window_seconds} s; "
              f"this request spends {b.request_spends}")
    if not address:
        print("note: no --address and no `from`: $self matched no address")
    return 0 if evaluation.allowed else 1


def _policy_budgets(args: argparse.Namespace) -> int:
    from signer.admin import policy

    rows = policy.budgets(load_config(args.config), args.client)
    for row in rows:
        print(f"{row.client}\t{row.policy}\t{row.budget}\t{row.spent}/{row.limit}\t"
              f"{row.window_seconds}s")
    if not rows:
        print("no client has a policy with budgets")
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    _check_backend_flags(args)
    if args.backend == "kms":
        from signer.admin import kms_keys

        alias = _required(args.alias, "--alias", "kms")
        created = kms_keys.create_key(alias, _kms_options(args), _optional_config(args.config))
        print(f"created KMS key {created.arn}")
        print(f"alias:   {created.alias}")
        print(f"address: {created.address}")
        print("\nadd to the service's config:\n")
        print(created.config_stanza())
        return 0
    from signer.admin import pkcs11_keys

    label = _required(args.label, "--label", "pkcs11")
    _print_provisioned(pkcs11_keys.create_key(label, _pkcs11_target(args)))
    return 0


def _keys_import(args: argparse.Namespace) -> int:
    _check_backend_flags(args)
    from signer.admin.key_material import read_key_material

    if args.backend == "kms":
        _required(args.alias, "--alias", "kms")
    else:
        _required(args.label, "--label", "pkcs11")
    config = _optional_config(args.config)
    secret, source = read_key_material(
        key_file=args.key_file, from_keystore=args.from_keystore,
        password_file=args.password_file, password_env=args.password_env,
        from_key=args.from_key, config=config, stdin=sys.stdin,
    )
    if args.backend == "kms":
        from signer.admin import kms_keys

        alias = _required(args.alias, "--alias", "kms")
        imported = kms_keys.import_key(alias, secret, _kms_options(args), config)
        print(f"imported into KMS key {imported.arn}")
        print(f"alias:   {imported.alias}")
        print(f"address: {imported.address}")
        print(f"\n{imported.config_stanza()}")
    else:
        from signer.admin import pkcs11_keys

        label = _required(args.label, "--label", "pkcs11")
        target = _pkcs11_target(args)
        _print_provisioned(pkcs11_keys.import_key(label, secret.hex(), source, target))
    if args.from_key is None:
        print(f"# delete the plaintext key ({source}) now that the {args.backend} key holds it",
              file=sys.stderr)
    return 0


def _pkcs11_list(args: argparse.Namespace) -> int:
    from signer.admin import pkcs11_keys

    rows = pkcs11_keys.list_keys(_pkcs11_target(args))
    print("label\tid\taddress\torigin")
    for key in rows:
        print(f"{key.label}\t{key.key_id.hex()}\t{key.address or '(no public key)'}\t{key.origin}")
    return 0


def _kms_list(args: argparse.Namespace) -> int:
    from signer.admin import kms_keys

    for key in kms_keys.list_keys(_kms_options(args), _optional_config(args.config)):
        aliases = ",".join(key.aliases) or "-"
        print(f"{key.key_id}\t{key.state}\t{key.address or '-'}\t{aliases}")
    return 0


def _pkcs11_target(args: argparse.Namespace) -> Any:
    from signer.admin.pkcs11_keys import TokenOptions, resolve_target

    options = TokenOptions(args.label, args.token_label, args.module, args.pin_env, args.pin_file)
    return resolve_target(options, _optional_config(args.config))


def _kms_options(args: argparse.Namespace) -> Any:
    from signer.admin.kms_keys import KmsOptions

    return KmsOptions(args.region, args.endpoint_url)


def _print_provisioned(key: Any) -> None:
    print(f"{key.origin}: key {key.label!r} id {key.key_id.hex()} address {key.address}")
    print(f"\n{key.config_stanza()}")


def _optional_config(path: Path | None) -> Config | None:
    return config_module.load(path) if path is not None else None


def _address(args: argparse.Namespace) -> int:
    _check_tls_flags(args)
    if args.server:
        from signer.v1 import signer_pb2 as pb

        request = pb.GetAddressRequest(key_id=args.key_id)
        print(_stub(_channel(args, args.server)).GetAddress(request, timeout=10).address)
        return 0
    from signer.service import KeyRing

    keyring = KeyRing.from_config(load_config(args.config))
    try:
        print(keyring.get(args.key_id).address)
    finally:
        keyring.close()
    return 0


def _sign(args: argparse.Namespace) -> int:
    from signer.client import RemoteAccount, transaction_to_proto

    try:
        text = sys.stdin.read() if str(args.tx) == "-" else args.tx.read_text(encoding="utf-8")
        tx = json.loads(text)
        if not isinstance(tx, dict):
            raise ValueError("expected a JSON object")
        transaction_to_proto(tx)  # a malformed dict fails here, before any network call
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
        print(f"wallet-signer: --tx {args.tx}: {exc}", file=sys.stderr)
        return 2
    account = RemoteAccount(_channel(args, args.server), args.key, timeout=args.timeout)
    signed = account.sign_transaction(tx)
    print(
        json.dumps(
            {
                "sender": account.address,
                "raw_transaction": signed.raw_transaction.to_0x_hex(),
                "hash": signed.hash.to_0x_hex(),
                "r": hex(signed.r),
                "s": hex(signed.s),
                "v": signed.v,
            },
            indent=2,
        )
    )
    return 0


def _health(args: argparse.Namespace) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from signer.grpc.server import SERVICE_NAME

    stub = health_pb2_grpc.HealthStub(_channel(args, args.server))
    try:
        reply = stub.Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=args.timeout
        )
    except grpc.RpcError as exc:
        print(f"{args.server}: {exc.code().name}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.server}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def _stub(channel: grpc.Channel) -> Any:
    from signer.v1 import signer_pb2_grpc as pb_grpc

    return pb_grpc.SignerServiceStub(channel)


if __name__ == "__main__":
    sys.exit(main())
