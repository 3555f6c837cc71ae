"""Bench only: `python -m bench.serve_no_audit serve --config FILE` serves like
`wallet-signer serve --config FILE` (the same Runtime) but with the audit log switched off (the
NoAudit stand-in; the service itself has no such mode), to measure the transport without the
store's durable writes."""

import sys
from pathlib import Path

from bench.common import NoAudit


def main(argv: list[str]) -> None:
    from signer import logs
    from signer.cli import load_config
    from signer.runtime import Runtime

    assert argv[:2] == ["serve", "--config"], argv
    logs.configure(None, "INFO")  # as `wallet-signer serve` logs: the same handler and format
    with Runtime(load_config(Path(argv[2]))) as runtime:
        runtime.open_application(audit=NoAudit())
        runtime.start()
        runtime.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
