"""Client commands: ask a running server (address --server, sign, health), or read a key's
address from the config."""

import argparse
import json
import sys

import grpc

from signer.cli.common import channel, check_tls_flags, load_config, stub


def address(args: argparse.Namespace) -> int:
    check_tls_flags(args)
    if args.server:
        from signer.v1 import signer_pb2 as pb

        request = pb.GetAddressRequest(key_id=args.key_id)
        print(stub(channel(args, args.server)).GetAddress(request, timeout=10).address)
        return 0
    from signer.service import KeyRing

    keyring = KeyRing.from_config(load_config(args.config))
    try:
        print(keyring.get(args.key_id).address)
    finally:
        keyring.close()
    return 0


def sign(args: argparse.Namespace) -> int:
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
    account = RemoteAccount(channel(args, args.server), args.key, timeout=args.timeout)
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


def health(args: argparse.Namespace) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from signer.grpc.server import SERVICE_NAME

    stub = health_pb2_grpc.HealthStub(channel(args, args.server))
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
