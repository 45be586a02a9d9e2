# The quick start: `make up` runs the whole lifecycle, `make test` passes the tests.
# Both create .venv on first use and install the project from its own files.
PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# `mlflow run --env-manager local` resolves `python` through PATH.
export PATH := $(BIN):$(PATH)

.PHONY: up test lint unit bench screenshots venv clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

up: $(STAMP)
	$(BIN)/lifecycle up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

# Side by side with `mlflow models serve` on the same model; writes docs/benchmarks.md.
# Needs wrk (`apt-get install wrk`). BENCH_ARGS="--duration 20 --workers 2" to change the run.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.async_bench --write-docs $(ASYNC_BENCH_ARGS)
	$(BIN)/python -m benchmarks.drift_bench --write-docs $(DRIFT_BENCH_ARGS)
	$(BIN)/python -m benchmarks.history_bench --write-docs $(HISTORY_BENCH_ARGS)

# The README's UI screenshots (docs/images/): `lifecycle up` in a temporary directory, some
# traffic and a report, then headless Chromium (Debian's `chromium` package).
screenshots: $(STAMP)
	$(BIN)/python -m scripts.screenshots

clean:
	rm -rf $(VENV) .lifecycle .mypy_cache .ruff_cache .pytest_cache
