"""What every command shares: the config to load, exit codes, how a client command reaches a
server."""

import argparse
from pathlib import Path
from typing import Any

import grpc

from signer import config as config_module
from signer.config import Config
from signer.errors import (
    BackendUnavailable,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidRequest,
    PermissionDenied,
    SignerError,
)

DESCRIPTION = """wallet-signer command line: serve, keys, address, sign, health, audit, store.

Exit codes: 0 success; 1 the server refused (or the audit chain is broken); 2 bad configuration
or input; 3 a backend or the state store failed (unreachable, refused us, key unusable, out of
time).
"""

CONFIG_ENV = "WALLET_SIGNER_CONFIG"

EXIT_REFUSED = 1  # a server answered with an error status (printed)
EXIT_INPUT = 2  # bad configuration or input: the message names the field or flag
EXIT_BACKEND = 3  # a backend (HSM, KMS) or the state store failed or refused us
_BACKEND_FAILURES = (BackendUnavailable, PermissionDenied, FailedPrecondition, DeadlineExceeded)


def exit_code(exc: SignerError) -> int:
    """3 when a backend or the store failed (retry, or fix access or the key), else 2."""
    return EXIT_BACKEND if isinstance(exc, _BACKEND_FAILURES) else EXIT_INPUT


def load_config(path: Path | None) -> Config:
    """The operator's config, or the embedded development default when none is given."""
    if path is not None:
        return config_module.load(path)
    from signer.admin.development import development_config

    return development_config()


def optional_config(path: Path | None) -> Config | None:
    return config_module.load(path) if path is not None else None


def check_tls_flags(args: argparse.Namespace) -> None:
    """TLS options say how to reach a server: without --server they would be ignored."""
    if args.server:
        return
    for flag in ("--tls-ca", "--tls-cert", "--tls-key", "--tls-server-name"):
        if getattr(args, flag.removeprefix("--").replace("-", "_")) is not None:
            raise InvalidRequest(f"{flag} applies only with --server")


def channel(args: argparse.Namespace, target: str) -> grpc.Channel:
    from signer.client import TlsFiles, open_channel

    tls = TlsFiles(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
    try:
        return open_channel(target, tls)
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"TLS options: {exc}") from None


def stub(channel: grpc.Channel) -> Any:
    from signer.v1 import signer_pb2_grpc as pb_grpc

    return pb_grpc.SignerServiceStub(channel)
