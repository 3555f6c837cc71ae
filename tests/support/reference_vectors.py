"""Reference vectors, kept as data files in tests/support/vectors/ with their source.

Each file is a JSON object with a `source` field (the URL it was taken from, or how it was
made); `load` refuses a file without one, so a vector cannot arrive without saying where it
comes from.
"""

import functools
import json
from pathlib import Path
from typing import Any

VECTORS_DIR = Path(__file__).resolve().parent / "vectors"


@functools.cache
def _read(name: str) -> str:
    return (VECTORS_DIR / f"{name}.json").read_text(encoding="utf-8")


def load(name: str) -> dict[str, Any]:
    """The vector file `name` (without .json), parsed afresh (callers may change it)."""
    vector: dict[str, Any] = json.loads(_read(name))
    if not str(vector.get("source", "")).strip():
        raise ValueError(f"tests/support/vectors/{name}.json does not record its source")
    return vector


def load_text(name: str) -> str:
    """The vector file `name` as text, for tests that send the JSON as it is."""
    load(name)  # the same source check
    return _read(name)


def typed_examples() -> dict[str, dict[str, Any]]:
    """EIP-712 typed data by name, beyond the EIP's Mail example (eip712_typed_examples.json)."""
    examples = load("eip712_typed_examples")["examples"]
    return {name: example["typed_data"] for name, example in examples.items()}


TYPED_EXAMPLES = typed_examples()
