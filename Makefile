# Everything a user or CI runs. Needs only python3 (>= 3.11) and pip: uv is installed if missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
# Stage commands say `python`: run them, and the tools, from the project's environment.
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export BENTOML_DO_NOT_TRACK := True

.PHONY: run setup repro test lint format clean

## run: set up, seed the embedded database, reproduce the pipeline
run: repro
	@tiffin models show | head -n 4

## setup: install the locked environment into .venv (installs uv first if needed)
setup: $(VENV)/.synced

$(VENV)/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --user uv 2>/dev/null \
		|| $(PYTHON) -m pip install --quiet uv || $(PYTHON) -m pip install --quiet --user --break-system-packages uv
	$(UV) sync --frozen --all-extras --python $(PYTHON)
	@touch $@

## repro: seed the source database if it is empty, then `dvc repro`
repro: setup
	tiffin db seed --if-empty
	dvc repro
	@# The store is outside DVC: re-register if it was wiped while dvc.lock says "up to date".
	@tiffin models check >/dev/null 2>&1 || dvc repro --force --single-item register

## test: install and run the whole test suite (lint, then pytest)
test: setup lint
	pytest

lint: setup
	ruff check .
	ruff format --check .

format: setup
	ruff check --fix .
	ruff format .

clean:
	rm -rf $(VENV) .bentoml data/tiffin.db reports .pytest_cache .ruff_cache
