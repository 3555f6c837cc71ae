"""`wallet-signer serve`: the runtime (signer/runtime.py) opens and closes everything."""

import argparse

from signer.cli.common import load_config


def serve(args: argparse.Namespace) -> int:
    from signer.runtime import Runtime

    config = load_config(args.config)
    with Runtime(config, config_path=args.config, allow_insecure=args.insecure_listen) as runtime:
        runtime.start()
        runtime.serve_forever()
    return 0
