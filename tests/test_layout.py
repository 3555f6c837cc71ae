"""The test tree itself: tests by layer, helpers and vectors in tests/support, and no test module
used as a library (shared code lives in tests/support, so moving or deleting a test file never
breaks another). This is the one test file at the top of tests/: it checks the layout."""

import ast
from pathlib import Path

import pytest

from tests.support import reference_vectors

TESTS = Path(__file__).resolve().parent
SUPPORT = TESTS / "support"
PYTHON_FILES = sorted(p for p in TESTS.rglob("*.py") if "node_modules" not in p.parts)


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(TESTS.parent).with_suffix("").parts)


def imported_test_modules(source: str, module: str) -> list[str]:
    """Every module named test_* that `source` (the module `module`) imports."""
    package = module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            # `from pkg import test_x` names a module; `from pkg.test_x import y` imports one
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found += [name for name in names if name.rpartition(".")[2].startswith("test_")]
    return found


@pytest.mark.parametrize(("source", "expected"), [
    ("from tests.eth.test_eth_reference import VECTORS", ["tests.eth.test_eth_reference"]),
    ("import tests.grpc.test_server", ["tests.grpc.test_server"]),
    ("from tests.grpc import test_server", ["tests.grpc.test_server"]),
    ("from .test_server import faulty_signer", ["tests.grpc.test_server"]),
    ("from . import test_stream as s", ["tests.grpc.test_stream"]),
    ("from ..eth.test_rpc_json import BAD", ["tests.eth.test_rpc_json"]),
    ("def f():\n    from tests.test_cli import env_config\n", ["tests.test_cli"]),
    ("from tests.support.faulty import faulty_signer\nimport pytest", []),
    ("from tests.support import bad_requests", []),
])
def test_the_check_finds_every_form_of_import(source: str, expected: list[str]):
    assert imported_test_modules(source, "tests.grpc.test_stream") == expected


def test_no_module_imports_a_test_module():
    offenders = {
        str(path.relative_to(TESTS.parent)): imported
        for path in PYTHON_FILES
        if (imported := imported_test_modules(path.read_text(encoding="utf-8"), _module_name(path)))
    }
    assert PYTHON_FILES and not offenders, (
        f"test modules used as libraries (move what they share to tests/support/): {offenders}"
    )


def test_test_files_sit_in_a_layer_folder():
    flat = sorted(p.name for p in TESTS.glob("test_*.py") if p != Path(__file__).resolve())
    assert not flat, f"put {flat} in the folder of the layer they test (tests/<layer>/)"
    in_support = sorted(str(p.relative_to(TESTS)) for p in SUPPORT.rglob("test_*.py"))
    assert not in_support, f"tests/support holds helpers, not tests: {in_support}"


def test_every_test_folder_is_a_package():
    # same-named test files in two folders would otherwise collide under pytest's import mode
    folders = {p.parent for p in PYTHON_FILES}
    missing = sorted(str(f.relative_to(TESTS.parent)) for f in folders
                     if not (f / "__init__.py").exists())
    assert not missing, f"add an __init__.py to {missing}"


@pytest.mark.parametrize("name", sorted(p.stem for p in reference_vectors.VECTORS_DIR.glob("*.json")))
def test_every_vector_file_records_its_source(name: str):
    assert reference_vectors.load(name)["source"].strip()


def test_a_vector_without_a_source_is_refused(tmp_path, monkeypatch):
    (tmp_path / "nameless.json").write_text('{"description": "no source"}')
    monkeypatch.setattr(reference_vectors, "VECTORS_DIR", tmp_path)
    reference_vectors._read.cache_clear()
    try:
        with pytest.raises(ValueError, match="does not record its source"):
            reference_vectors.load("nameless")
    finally:
        reference_vectors._read.cache_clear()
