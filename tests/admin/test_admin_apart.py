"""Serving code never imports the operator side (`signer.admin`, `signer.cli`), and no module of
`signer` is in an import cycle (the embedded default and PKCS#11 provisioning had one, policy
config and engine another, signer.config and signer.jsonrpc.config a third)."""

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


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle a depth-first walk closes, as its path (a -> b -> a), in a stable order."""
    cycles: list[list[str]] = []
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> None:
        path.append(name)
        for nxt in sorted(graph.get(name, ())):
            if nxt in path:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in done:
                visit(nxt)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        if name not in done:
            visit(name)
    return cycles


def test_the_cycle_finder_reports_each_cycle_with_its_path():
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": set(), "e": {"e2"}, "e2": {"e"}}
    assert import_cycles(graph) == [["a", "b", "c", "a"], ["e", "e2", "e"]]
    assert import_cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_signer_has_no_import_cycle():
    """Statically, over every module of the package, imports inside functions included: a
    cycle fails here with its path, e.g. signer.policy.config -> signer.policy.engine -> ..."""
    graph = {name: {m for m in imports(path) if m in MODULES and m != name}
             for name, path in MODULES.items()}
    assert [" -> ".join(cycle) for cycle in import_cycles(graph)] == []
