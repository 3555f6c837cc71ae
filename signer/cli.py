"""wallet-signer command line: serve, keys, address, sign."""

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from signer import config as config_module
from signer.config import Config
from signer.errors import SignerError

log = logging.getLogger("signer")

CONFIG_ENV = "WALLET_SIGNER_CONFIG"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        result: int = args.run(args)
        return result
    except SignerError as exc:
        print(f"wallet-signer: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:  # a client command whose server refused or is unreachable
        print(f"wallet-signer: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wallet-signer", description=__doc__)
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gRPC signing service")
    _config_arg(serve)
    serve.add_argument(
        "--insecure-listen",
        action="store_true",
        help="allow a non-loopback listen address without TLS (only behind a TLS proxy)",
    )
    serve.set_defaults(run=_serve)

    keys = commands.add_parser("keys", help="list, create or import keys")
    key_commands = keys.add_subparsers(required=True, metavar="ACTION")
    listing = key_commands.add_parser(
        "list", help="configured keys, or every key a backend holds (--backend)"
    )
    _config_arg(listing)
    listing.add_argument("--server", help="ask a running server (HOST:PORT) instead")
    listing.add_argument("--backend", choices=["pkcs11", "kms"], help="list a backend's keys")
    _backend_args(listing)
    listing.set_defaults(run=_keys_list)

    create = key_commands.add_parser("create", help="generate a key inside an HSM or KMS")
    _config_arg(create)
    create.add_argument("--backend", choices=["pkcs11", "kms"], required=True)
    _backend_args(create)
    create.set_defaults(run=_keys_create)

    imp = key_commands.add_parser("import", help="move an existing hex key into an HSM")
    _config_arg(imp)
    imp.add_argument("--backend", choices=["pkcs11"], required=True)
    imp.add_argument(
        "--key-file", type=Path, help="file holding the hex private key (default: stdin)"
    )
    _backend_args(imp)
    imp.set_defaults(run=_keys_import)

    address = commands.add_parser("address", help="print the address of a configured key")
    _config_arg(address)
    address.add_argument("key_id")
    address.add_argument("--server", help="ask a running server (HOST:PORT) instead")
    address.set_defaults(run=_address)

    health = commands.add_parser("health", help="exit 0 if a running server is SERVING")
    health.add_argument("--server", default=config_module.DEFAULT_LISTEN, help="HOST:PORT")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds")
    health.set_defaults(run=_health)

    sign = commands.add_parser("sign", help="ask a running server to sign a transaction")
    sign.add_argument("--key", required=True, help="key_id to sign with")
    sign.add_argument(
        "--tx", required=True, type=Path, help="transaction JSON (eth-account dict; - for stdin)"
    )
    sign.add_argument("--server", default=config_module.DEFAULT_LISTEN, help="HOST:PORT")
    sign.add_argument("--timeout", type=float, default=30.0, help="seconds")
    sign.set_defaults(run=_sign)
    return parser


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=os.environ.get(CONFIG_ENV),
        help=f"TOML config file (default: ${CONFIG_ENV}, else the embedded development default)",
    )


def _backend_args(parser: argparse.ArgumentParser) -> None:
    """Options of `keys list/create/import` for the HSM and KMS backends."""
    parser.add_argument("--label", help="pkcs11: key label (CKA_LABEL)")
    parser.add_argument("--token-label", help="pkcs11: token label (default: from config)")
    parser.add_argument("--module", type=Path, help="pkcs11: library path (default: SoftHSM)")
    parser.add_argument("--pin-env", help="pkcs11: environment variable holding the user PIN")
    parser.add_argument("--pin-file", type=Path, help="pkcs11: file holding the user PIN")
    parser.add_argument("--alias", help="kms: alias name (with or without alias/)")
    parser.add_argument("--region", help="kms: AWS region")
    parser.add_argument("--endpoint-url", help="kms: endpoint (emulators, VPC endpoints)")


def load_config(path: Path | None) -> Config:
    """The operator's config, or the embedded development default when none is given."""
    if path is not None:
        return config_module.load(path)
    from signer import defaults

    return defaults.development_config()


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
    try:
        server = SignerServer(app, config.server, allow_insecure=args.insecure_listen)
    except BaseException:
        keyring.close()
        app.close()
        raise
    serve_forever(server)
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    if args.backend is not None:
        return int(_admin(args.backend).list_keys(args, _optional_config(args.config)))
    if args.server:
        from signer.v1 import signer_pb2 as pb

        reply = _stub(args.server).ListKeys(pb.ListKeysRequest(), timeout=10)
        rows = [(k.key_id, k.backend, k.address) for k in reply.keys]
    else:
        from signer.service import KeyRing

        keyring = KeyRing.from_config(load_config(args.config))
        try:
            rows = [(s.key_id, s.backend_name, s.address) for s in keyring]
        finally:
            keyring.close()
    for key_id, backend, address in rows:
        print(f"{key_id}\t{backend}\t{address}")
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    return int(_admin(args.backend).create_key(args, _optional_config(args.config)))


def _keys_import(args: argparse.Namespace) -> int:
    return int(_admin(args.backend).import_key(args, _optional_config(args.config)))


def _admin(backend: str) -> Any:
    """The provisioning module of a backend, imported only when asked for."""
    return importlib.import_module(f"signer.backends.{backend}_admin")


def _optional_config(path: Path | None) -> Config | None:
    return config_module.load(path) if path is not None else None


def _address(args: argparse.Namespace) -> int:
    if args.server:
        from signer.v1 import signer_pb2 as pb

        request = pb.GetAddressRequest(key_id=args.key_id)
        print(_stub(args.server).GetAddress(request, timeout=10).address)
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
    account = RemoteAccount(grpc.insecure_channel(args.server), args.key, timeout=args.timeout)
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

    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(args.server))
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


def _stub(target: str) -> Any:
    from signer.v1 import signer_pb2_grpc as pb_grpc

    return pb_grpc.SignerServiceStub(grpc.insecure_channel(target))


if __name__ == "__main__":
    sys.exit(main())
