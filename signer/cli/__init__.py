"""wallet-signer command line: serve, keys, address, sign, health, audit, store.

Argument parsing only: `parser` (the grammar), `serve` (the runtime), `operator` (keys, audit,
store, policy: calls signer.admin), `client` (commands that ask a running server). Exit codes
are in `common` (and in `wallet-signer --help`).
"""

import sys
from collections.abc import Sequence

import grpc

from signer import logs
from signer.cli.common import (
    CONFIG_ENV,
    EXIT_BACKEND,
    EXIT_INPUT,
    EXIT_REFUSED,
    exit_code,
    load_config,
)
from signer.cli.operator import BACKEND_FLAGS
from signer.cli.parser import build_parser
from signer.errors import SignerError

__all__ = [
    "BACKEND_FLAGS",
    "CONFIG_ENV",
    "EXIT_BACKEND",
    "EXIT_INPUT",
    "EXIT_REFUSED",
    "_parser",
    "exit_code",
    "load_config",
    "main",
]

_parser = build_parser  # the name tests and the docs' CLI-example check call


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
