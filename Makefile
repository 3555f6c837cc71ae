# Every target sets itself up on a fresh machine: virtualenv in .venv, Python packages, and
# (as root) the Debian packages the tests need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := softhsm2 opensc postgresql
# The image is built and run with podman (runc: crun, when installed, refuses cgroup v1 here) from a
# base made with mmdebstrap, since public images cannot be pulled here; only image targets need them.
IMAGE_PACKAGES := podman runc mmdebstrap
IMAGE ?= localhost/wallet-signer:dev
BASE_IMAGE ?= localhost/wallet-signer-base:bookworm
# deploy/kubernetes validators, in a virtualenv of their own (see deploy/requirements-validate.txt)
DEPLOY_VENV := .venv-deploy
DEPLOY_STAMP := $(DEPLOY_VENV)/.installed
# the Kubernetes version whose schemas the manifests must pass (the oldest we support)
K8S_VERSION := 1.32.0
# kinds kubernetes-validate has no schema for (CRDs, the kustomization): their files are left
# out of it and checked field by field in tests/deploy
K8S_NO_SCHEMA := ^kind: (Kustomization|ServiceMonitor|Certificate|ExternalSecret)$$
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: serve test docs bench lint proto system-deps clean validate-deploy image image-deps test-image

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(DEPLOY_STAMP): deploy/requirements-validate.txt
	$(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install --quiet --upgrade pip
	$(DEPLOY_VENV)/bin/pip install --quiet -r deploy/requirements-validate.txt
	touch $(DEPLOY_STAMP)

system-deps:
	@bash softhsm/install-deps.sh $(APT_PACKAGES)

serve: $(STAMP) system-deps
	$(BIN)/wallet-signer serve $(if $(CONFIG),--config $(CONFIG),)

test: $(STAMP) system-deps validate-deploy
	$(BIN)/ruff check signer tests bench
	$(BIN)/mypy signer bench
	$(MAKE) --no-print-directory docs
	WALLET_SIGNER_REQUIRE_BACKENDS=env,pkcs11,kms,postgres,jsonrpc,vault $(BIN)/pytest -q

# Every manifest under deploy/kubernetes, offline: the Kubernetes schemas (strict: an unknown
# field fails) and checkov's security checks (0 failed; skips carry their reason in the
# manifest). --skip-download: no call to checkov's platform, the checks are in the package.
validate-deploy: $(DEPLOY_STAMP)
	$(DEPLOY_VENV)/bin/kubernetes-validate --strict --quiet --kubernetes-version $(K8S_VERSION) \
		$$(grep -rLE '$(K8S_NO_SCHEMA)' deploy/kubernetes --include='*.yaml')
	$(DEPLOY_VENV)/bin/checkov --directory deploy/kubernetes --framework kubernetes --quiet \
		--compact --skip-download

# The documentation site into site/: a broken link or anchor, or a page missing from the
# navigation, fails the build (--strict). Offline: nothing is fetched at build time.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

image-deps:
	@bash softhsm/install-deps.sh $(IMAGE_PACKAGES)

image: image-deps
	bash deploy/image/build.sh $(IMAGE) $(BASE_IMAGE)

# Runs the image as operators do (tests/deploy/test_image.py); "image" in REQUIRE turns its
# skip into a failure.
test-image: $(STAMP) system-deps image
	WALLET_SIGNER_IMAGE=$(IMAGE) WALLET_SIGNER_REQUIRE_BACKENDS=image,pkcs11 \
		$(BIN)/pytest -q -s -p no:cacheprovider tests/deploy/test_image.py

bench: $(STAMP) system-deps
	$(BIN)/python -m bench

proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. proto/signer/v1/signer.proto

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) site .wallet-signer .pytest_cache .mypy_cache .ruff_cache
