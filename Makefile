# irisserve: `make run` sets everything up and serves; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MODEL_DIR := models/iris/1.0.0

.PHONY: venv model train run test lint bench clean bundle-function browser-test

venv: $(VENV)/.installed

# A line per step, and pip's own progress: the first install takes a minute or two.
$(VENV)/.installed: requirements-dev.txt pyproject.toml bench/pyproject.toml
	@echo "==> [1/5] creating the virtual environment in $(VENV) ($$($(PYTHON) --version))"
	$(PYTHON) -m venv $(VENV)
	@echo "==> [2/5] upgrading pip"
	$(BIN)/pip install --progress-bar on --upgrade pip
	@echo "==> [3/5] installing the pinned dependencies (requirements-dev.txt: serving, training, tests, benchmark)"
	$(BIN)/pip install --progress-bar on -r requirements-dev.txt
	@echo "==> [4/5] installing irisserve itself (editable)"
	$(BIN)/pip install --no-deps -e .
	@echo "==> [5/5] installing the benchmark, irisserve-bench from bench/ (editable)"
	$(BIN)/pip install --no-deps -e bench --config-settings editable_mode=compat  # a path in a .pth: no import hook in every process
	touch $@
	@echo "==> environment ready: $(BIN)/irisserve"

# Trains only when no artifact exists yet.
model: $(MODEL_DIR)/manifest.json

$(MODEL_DIR)/manifest.json: | venv
	@echo "==> no model in $(MODEL_DIR) yet: training the Iris classifier"
	$(BIN)/irisserve train --out $(MODEL_DIR)

# Retrains over the earlier Iris artifact (--force replaces only the files irisserve wrote there).
train: venv
	$(BIN)/irisserve train --out $(MODEL_DIR) --force

run: model
	@echo "==> serving $(MODEL_DIR) on http://127.0.0.1:8000 (Swagger UI at /docs, the model page at /); Ctrl-C stops"
	$(BIN)/irisserve serve

# The suite on every core (pytest-xdist; a test file's tests stay on one worker, each server on its own free port).
test: model lint
	$(BIN)/python -m pytest -n auto --dist loadfile

# The model page in a real browser (tests marked `browser`, left out of `make test`): Debian's Chromium,
# installed with apt-get when missing (CI is a fresh root Debian machine), driven by Playwright for Python.
# Never `playwright install`: it downloads a browser build, which this network refuses.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser-test: model
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium; }
	$(BIN)/python -m pytest -m browser

# ruff and mypy (strict; settings in pyproject.toml) on the package.
lint: venv
	$(BIN)/ruff check src
	$(BIN)/mypy

bench: model
	$(BIN)/irisserve bench --local --update-docs

# The Cloud Function source folder: deploy with gcloud functions deploy ... --source build/cloud_function
bundle-function: model
	$(BIN)/irisserve bundle-function --out build/cloud_function --force  # the target rebuilds its own bundle

clean:
	rm -rf $(VENV) build models .pytest_cache

# --- Container image and deployment (docs/deployment.md) ---------------------------------------
# image-test: build the Dockerfile with podman from a local Debian 12 base and check the running
# container (HTTP, non-root, SIGTERM, hash check, size, cold start); state in $TMPDIR/irisserve-podman.
# image: the same build, without the checks.
# deploy-*: PROJECT_ID=... [REGION=...] [MODEL_DIR=models/NAME/VERSION] [SERVICE=... | FUNCTION=...]
# [DRY_RUN=1] make deploy-cloudrun: the image (Iris, or MODEL_DIR's artifact), named after the model,
# smoke-tested with the model's example row. The Cloud Run rollout: make canary MODEL_DIR=... (a revision
# tagged canary, no traffic), make promote PERCENT=10|50|100, make rollback [REVISION=...].
.PHONY: image image-test lint-docker deploy-cloudrun deploy-function canary promote rollback

image:
	$(PYTHON) scripts/image_test.py --build-only

image-test: venv
	$(PYTHON) scripts/image_test.py

lint-docker: venv
	$(BIN)/hadolint Dockerfile

deploy-cloudrun: venv
	@scripts/deploy_cloudrun.sh

canary: venv
	@CANARY=1 scripts/deploy_cloudrun.sh

promote: venv
	@scripts/cloudrun_traffic.sh promote

rollback: venv
	@scripts/cloudrun_traffic.sh rollback

deploy-function: venv
	@scripts/deploy_function.sh
