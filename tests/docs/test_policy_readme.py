"""The docs' policy examples (docs/policy/examples.md) are valid policies (docs that do not
compile rot)."""

import re
import tomllib
from pathlib import Path

import pytest

from signer.policy import Policy, PolicyConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "policy" / "examples.md"


def _examples() -> list[str]:
    text = EXAMPLES.read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    return [b for b in blocks if "[policies." in b and "…" not in b]


def test_the_readme_has_three_worked_examples():
    assert len(_examples()) == 3


@pytest.mark.parametrize("index", range(3))
def test_readme_policy_examples_compile(index: int):
    document = tomllib.loads(_examples()[index])
    assert document["policies"]
    for name, table in document["policies"].items():
        Policy.compile(name, PolicyConfig.model_validate(table))
