# Every target sets up what it needs. `make help` lists them.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP := $(VENV)/.synced

.DEFAULT_GOAL := help
.PHONY: help env run compile local test test-main lint format lock bench image clean

help:  ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# The product lock and the test/dev lock together (the image installs requirements.lock only).
$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync -q --compile-bytecode --python $(BIN)/python requirements.lock requirements-dev.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

env: $(STAMP)  ## create .venv from requirements.lock + requirements-dev.lock (exact versions), install the project

run: env  ## set up, compile the Vertex pipeline YAML and run the whole pipeline locally
	$(BIN)/python compile.py
	$(BIN)/python run_local.py

compile: env  ## write build/training_pipeline.yaml
	$(BIN)/python compile.py

test: test-legacy test-main  ## set up and run every test (tensorflow-io env, then lint + main suite)

test-main: env  ## lint, then the main test suite
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint: env  ## ruff format check + lint
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: env  ## ruff format + autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lock: env  ## re-resolve requirements.in and requirements-dev.in -> their .lock files
	$(BIN)/uv pip compile -q requirements.in -o requirements.lock --python-version 3.11
	$(BIN)/uv pip compile -q requirements-dev.in -o requirements-dev.lock --python-version 3.11

bench: env  ## reader, training and end-to-end benchmarks (slow; prints tables)
	$(BIN)/python bench/readers.py --rows 1000000
	$(BIN)/python bench/training.py
	$(BIN)/python bench/e2e.py --rows 1000000

image:  ## build the one image (Beam SDK base): every component and the Dataflow workers (needs Docker)
	docker build -t $${IMAGE:-imbalanced-trainer:local} .

clean:  ## remove build outputs (keeps the venvs)
	rm -rf build .pytest_cache

-include legacy.mk
