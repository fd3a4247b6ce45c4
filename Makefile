# Lifeboat developer entry points. Two commands set everything up on a fresh machine:
#   make demo   - build the local sandbox and run the failover demo
#   make test   - lint, type-check and run the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: all demo test lint typecheck pytest unit assets crds manifests sandbox bench clean help

help:
	@echo "make demo    - start the local sandbox and run the failover demo"
	@echo "make test    - lint, type-check and run every test (builds the sandbox on first use)"
	@echo "make assets  - build (or locate) kube-apiserver, etcd and kubectl for the sandbox"
	@echo "make sandbox - start the sandbox and keep it running (Ctrl-C to stop)"
	@echo "make bench   - object replication benchmark against rclone (writes bench/RESULTS.md)"
	@echo "make manifests - regenerate CRDs and install bundles from the Python models"

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --extra test --python $(PYTHON)
	@touch $@

assets: $(VENV)/.synced
	$(BIN)/lifeboat sandbox assets

demo: assets
	$(BIN)/lifeboat demo

sandbox: assets
	$(BIN)/lifeboat sandbox up

lint: $(VENV)/.synced
	$(BIN)/ruff check controller tests bench
	$(BIN)/ruff format --check controller tests bench

typecheck: $(VENV)/.synced
	$(BIN)/mypy

unit: $(VENV)/.synced
	$(BIN)/pytest -m "not integration" -q

pytest: assets
	$(BIN)/pytest -q

test: lint typecheck pytest

# Object replication against rclone (100,000 objects; about an hour on 2 cores): not a test.
bench: $(VENV)/.synced
	$(BIN)/python -m bench.objects --report bench/RESULTS.md

manifests: $(VENV)/.synced
	$(BIN)/lifeboat dev generate-manifests

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache .hypothesis
