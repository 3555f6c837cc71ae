"""Generated code matches proto/, and the Dockerfile keeps its promises."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("signer_pb2.py", "signer_pb2.pyi", "signer_pb2_grpc.py")


def test_generated_code_matches_proto(tmp_path):
    pytest.importorskip("grpc_tools")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}",
         f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
         str(ROOT / "proto/signer/v1/signer.proto")],
        check=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "signer/v1" / name).read_text()
        committed = (ROOT / "signer/v1" / name).read_text()
        assert fresh == committed, f"signer/v1/{name} is stale: run `make proto` and commit"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        current += " " + stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            joined.append(current.strip())
            current = ""
    return [(j.split(None, 1)[0].upper(), j.split(None, 1)[1]) for j in joined]


def test_dockerfile_runs_as_non_root_with_grpc_health_check():
    instructions = dockerfile_instructions()
    known = {"FROM", "RUN", "COPY", "ENV", "USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD",
             "WORKDIR", "ARG", "LABEL", "VOLUME"}
    assert {name for name, _ in instructions} <= known
    final_stage = instructions[max(i for i, (n, _) in enumerate(instructions) if n == "FROM"):]
    # one file builds on the public python image (default) and on a local Debian base (make image)
    assert instructions[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    assert final_stage[0][1] == "${BASE_IMAGE}"
    users = [args for name, args in final_stage if name == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    health = [args for name, args in final_stage if name == "HEALTHCHECK"]
    assert health and '"wallet-signer", "health"' in health[0]
    assert any("softhsm2" in args for name, args in final_stage if name == "RUN")
    text = (ROOT / "Dockerfile").read_text()
    for baked in ("dev-key", ".wallet-signer", "PIN=", "AWS_SECRET_ACCESS_KEY", "[dev]"):
        assert baked not in text
