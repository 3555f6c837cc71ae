"""`python -m bench [core|policy|pkcs11|kms|sources|access|path|transport|jsonrpc|audit ...]`: the benchmarks (all by default).

`python -m bench soak --minutes N` runs the soak test instead (not part of `make bench`).
"""

import importlib
import os
import platform
import sys

SUITES = ("core", "policy", "pkcs11", "kms", "sources", "access", "path", "transport", "jsonrpc",
          "audit")


def main(argv: list[str]) -> None:
    if argv[:1] == ["soak"]:
        from bench import soak

        soak.main(argv[1:])
        return
    chosen = argv or list(SUITES)
    unknown = set(chosen) - set(SUITES)
    if unknown:
        raise SystemExit(f"unknown suites {sorted(unknown)}; choose from {SUITES}")
    print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    for name in chosen:
        importlib.import_module(f"bench.bench_{name}").main()


if __name__ == "__main__":
    main(sys.argv[1:])
