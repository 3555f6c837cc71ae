"""The configuration reference names every field the config models accept: a field added to
`signer/config.py` (or the JSON-RPC and policy models it holds) without its documentation
fails here."""

import typing

from pydantic import BaseModel

from signer import config as config_module
from tests.support.doc_fences import DOCS

REFERENCE = DOCS / "configuration.md"


def _models(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _fields(root: type[BaseModel]) -> dict[str, set[str]]:
    """model name -> the names it accepts in TOML (aliases, e.g. a condition's `in`)."""
    seen: dict[str, set[str]] = {}
    todo = [root]
    while todo:
        model = todo.pop()
        if model.__name__ in seen:
            continue
        seen[model.__name__] = {f.alias or name for name, f in model.model_fields.items()}
        for field in model.model_fields.values():
            todo.extend(_models(field.annotation))
    return seen


def test_the_walk_reaches_every_model():
    names = set(_fields(config_module.Config))
    assert {"ServerConfig", "MetricsConfig", "EnvKeyConfig", "Pkcs11KeyConfig", "KmsKeyConfig",
            "ClientConfig", "StoreConfig", "JsonRpcConfig", "PolicyConfig", "Budget", "Rule",
            "Condition", "DomainMatch"} <= names
    assert "in" in _fields(config_module.Config)["Condition"]  # TOML names, not Python's


def test_every_config_field_is_in_the_reference():
    text = REFERENCE.read_text(encoding="utf-8")
    missing = sorted(f"{model}.{field}"
                     for model, fields in _fields(config_module.Config).items()
                     for field in fields if f"`{field}`" not in text)
    assert not missing, f"not in {REFERENCE.name}: {missing}"
