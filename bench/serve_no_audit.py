"""Bench only: `python -m bench.serve_no_audit serve --config FILE` serves like
`wallet-signer serve --config FILE` but with the audit log switched off (bench_access's NoAudit
stand-in; the service itself has no such mode), to measure the transport without the store's
durable writes."""

import logging
import sys
from pathlib import Path

from bench.bench_access import NoAudit


def main(argv: list[str]) -> None:
    from signer.app.access import AccessControl
    from signer.app.application import Application
    from signer.cli import load_config
    from signer.grpc.server import SignerServer, serve_forever
    from signer.service import KeyRing
    from signer.store import open_store

    assert argv[:2] == ["serve", "--config"], argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    config = load_config(Path(argv[2]))
    store = open_store(config.store.url)
    store.migrate()
    app = Application(KeyRing.from_config(config), store, access=AccessControl({}),
                      audit=NoAudit())  # type: ignore[arg-type]
    serve_forever(SignerServer(app, config.server))


if __name__ == "__main__":
    main(sys.argv[1:])
