# Every target sets itself up on a fresh machine: virtualenv in .venv, Python packages, and
# (as root) the Debian packages the tests need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := softhsm2 opensc postgresql
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: serve test docs bench lint proto system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

system-deps:
	@bash softhsm/install-deps.sh $(APT_PACKAGES)

serve: $(STAMP) system-deps
	$(BIN)/wallet-signer serve $(if $(CONFIG),--config $(CONFIG),)

test: $(STAMP) system-deps
	$(BIN)/ruff check signer tests bench
	$(BIN)/mypy signer
	$(MAKE) --no-print-directory docs
	WALLET_SIGNER_REQUIRE_BACKENDS=env,pkcs11,kms,postgres,jsonrpc $(BIN)/pytest -q

# The documentation site into site/: a broken link or anchor, or a page missing from the
# navigation, fails the build (--strict). Offline: nothing is fetched at build time.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(STAMP) system-deps
	$(BIN)/python -m bench

proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. proto/signer/v1/signer.proto

clean:
	rm -rf $(VENV) site .wallet-signer .pytest_cache .mypy_cache .ruff_cache
