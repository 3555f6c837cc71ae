"""Serving code never imports the operator side (`signer.admin`, `signer.cli`), and the
operator side has no import cycles (the embedded default and PKCS#11 provisioning had one)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import signer

ROOT = Path(signer.__file__).resolve().parent
OPERATOR = ("signer.admin", "signer.cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_operator(name: str) -> bool:
    return any(name == side or name.startswith(side + ".") for side in OPERATOR)


def imports(path: Path) -> set[str]:
    """Every signer module `path` imports, at the top or inside functions, absolute or
    relative (`from signer import admin` counts as signer.admin)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "signer" or m.startswith("signer.")}


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def test_serving_modules_never_import_the_operator_side():
    offenders = {
        name: sorted(m for m in imports(path) if is_operator(m))
        for name, path in MODULES.items()
        if not is_operator(name)
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_importing_every_serving_module_loads_no_operator_module():
    serving = sorted(name for name in MODULES if not is_operator(name))
    code = ("import importlib, json, sys\n"
            f"for name in {serving!r}:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    loaded = json.loads(done.stdout)
    assert "signer.grpc.server" in loaded and "signer.backends.pkcs11" in loaded
    assert [m for m in loaded if is_operator(m)] == []


def test_operator_side_has_no_import_cycle():
    graph = {name: {m for m in imports(path) if m in MODULES and m != name}
             for name, path in MODULES.items() if is_operator(name)}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    assert sorted(name for name in graph if reaches(name, name, {name})) == []
