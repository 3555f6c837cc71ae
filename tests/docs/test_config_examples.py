"""Every TOML config example in the docs is loaded by the service's own config loader, so a
renamed or removed field, or a new rule across fields, fails here instead of in a reader's
hands. A block that is not a whole config is marked `<!-- fragment -->` and is still TOML."""

import tomllib

import pytest

from signer import config as config_module
from signer.errors import ConfigError
from tests.support.doc_fences import Block, blocks, pages

TOML = [b for page in pages(readme=True) for b in blocks(page) if b.lang == "toml"]
WHOLE = [b for b in TOML if not b.fragment]
FRAGMENTS = [b for b in TOML if b.fragment]


def test_the_docs_have_config_examples():
    # the configuration reference, the three backends, JSON-RPC and the policy examples at least
    assert len(WHOLE) >= 7, [b.where for b in WHOLE]


@pytest.mark.parametrize("block", WHOLE, ids=lambda b: b.where)
def test_config_example_loads(block: Block, tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(block.text, encoding="utf-8")
    # the loader `wallet-signer serve --config` uses; no environment overrides from the test run
    config = config_module.load(path, environ={})
    assert isinstance(config, config_module.Config)


@pytest.mark.parametrize("block", FRAGMENTS, ids=lambda b: b.where)
def test_fragment_is_toml_and_really_a_fragment(block: Block):
    tomllib.loads(block.text)
    # a marked block that loads as a whole config should lose its marker and be checked whole
    with pytest.raises(ConfigError):
        config_module.validate(tomllib.loads(block.text), block.where)


def test_a_broken_example_would_fail(tmp_path):
    """The check above is not vacuous: a misspelt field in an example is an error."""
    path = tmp_path / "config.toml"
    path.write_text('[server]\nlisten = "127.0.0.1:50051"\nmax_worker = 4\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="max_worker"):
        config_module.load(path, environ={})
