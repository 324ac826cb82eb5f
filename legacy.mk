# Legacy tensorflow-io env (.venv-legacy): TF 2.16.2 + tensorflow-io 0.37.1 (DESIGN.md §2).
# Included from the Makefile; uses its PYTHON and UV_VERSION.
LEGACY_VENV := .venv-legacy
LEGACY_BIN := $(LEGACY_VENV)/bin
LEGACY_STAMP := $(LEGACY_VENV)/.synced
# Only these files are collected there: the rest of tests/ imports kfp / TF 2.21 code.
LEGACY_TESTS := tests/reading/sources/test_tfio_source.py

.PHONY: legacy-env test-legacy legacy-lock legacy-bench

$(LEGACY_STAMP): requirements-legacy.lock pyproject.toml
	test -x $(LEGACY_BIN)/python || $(PYTHON) -m venv $(LEGACY_VENV)
	$(LEGACY_BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	$(LEGACY_BIN)/uv pip sync -q --python $(LEGACY_BIN)/python requirements-legacy.lock
	$(LEGACY_BIN)/uv pip install -q --python $(LEGACY_BIN)/python --no-deps -e .
	touch $(LEGACY_STAMP)

legacy-env: $(LEGACY_STAMP)  ## create .venv-legacy (TF 2.16 + tensorflow-io 0.37.1) from requirements-legacy.lock

# VERTEX_IMBALANCED_LEGACY_RUN=1: tensorflow-io must import, and a skipped test or a run with no
# passed test fails (tests/conftest.py), so a broken legacy env cannot give a green run.
test-legacy: legacy-env  ## run the tensorflow-io tests (pytest -m legacy) in .venv-legacy; skips fail
	VERTEX_IMBALANCED_LEGACY_RUN=1 $(LEGACY_BIN)/pytest -q -m legacy $(LEGACY_TESTS)

legacy-lock: env  ## re-resolve requirements-legacy.in -> requirements-legacy.lock
	$(BIN)/uv pip compile -q requirements-legacy.in -o requirements-legacy.lock --python-version 3.11

legacy-bench: legacy-env  ## tensorflow-io reader benchmark alone (Avro and Arrow; one JSON line)
	$(LEGACY_BIN)/python bench/tfio_reader_bench.py --rows 1000000
