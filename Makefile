# The quick start: `make up` runs the whole lifecycle, `make test` passes the tests.
# Both create .venv on first use and install the project from its own files.
PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Airflow's own virtualenv (pipelines/airflow/): its pinned fastapi conflicts with the project's.
AIRFLOW_VENV ?= .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed-stamp
AIRFLOW_REQS := pipelines/airflow/requirements.txt pipelines/airflow/constraints.txt
# `mlflow run --env-manager local` resolves `python` through PATH.
export PATH := $(BIN):$(PATH)
# `lifecycle up` and the tests run the Airflow this Makefile builds.
export LIFECYCLE_AIRFLOW_VENV := $(abspath $(AIRFLOW_VENV))

.PHONY: up test lint unit bench screenshots venv airflow clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

$(AIRFLOW_STAMP): $(AIRFLOW_REQS)
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install -q --upgrade pip
	$(AIRFLOW_VENV)/bin/python -m pip install -q -c pipelines/airflow/constraints.txt \
		-r pipelines/airflow/requirements.txt
	touch $(AIRFLOW_STAMP)

airflow: $(AIRFLOW_STAMP)

up: $(STAMP) $(AIRFLOW_STAMP)
	$(BIN)/lifecycle up

lint: $(STAMP) $(AIRFLOW_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	# The DAG files, against the Airflow they run on. arg-type is off: TaskFlow passes a task's
	# XComArg where the next task declares the value it receives at run time.
	$(BIN)/mypy --python-executable $(AIRFLOW_VENV)/bin/python --disable-error-code arg-type \
		pipelines/dags/*.py pipelines/airflow/dag_test.py

# Two worker processes (pytest-xdist), one module at a time each (tests/conftest.py): most of a
# module's time is spent waiting on the servers it started. PYTEST_WORKERS=0 runs in one.
PYTEST_WORKERS ?= 2
test: lint $(AIRFLOW_STAMP)
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --durations=25 $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

# Side by side with `mlflow models serve` on the same model; writes docs/benchmarks.md.
# Needs wrk (`apt-get install wrk`). BENCH_ARGS="--duration 20 --rounds 5" to change the run,
# BENCH_ARGS=--quick for a short try.
# The async and batch-file benchmarks start their stack on the local PostgreSQL and RabbitMQ,
# as the tests do (docs/testing.md); set these to use others.
bench: export LIFECYCLE_TEST_POSTGRES_URL ?= postgresql+psycopg2://postgres@127.0.0.1:5432/postgres
bench: export LIFECYCLE_TEST_AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672//
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.async_bench --write-docs $(ASYNC_BENCH_ARGS)
	$(BIN)/python -m benchmarks.drift_bench --write-docs $(DRIFT_BENCH_ARGS)
	$(BIN)/python -m benchmarks.history_bench --write-docs $(HISTORY_BENCH_ARGS)
	$(BIN)/python -m benchmarks.store_write --write-docs $(STORE_BENCH_ARGS)
	$(BIN)/python -m benchmarks.batch_file --write-docs $(BATCH_BENCH_ARGS)

# The README's UI screenshots (docs/images/): `lifecycle up` in a temporary directory, some
# traffic and a report, then headless Chromium (Debian's `chromium` package).
screenshots: $(STAMP)
	$(BIN)/python -m scripts.screenshots

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) .lifecycle .mypy_cache .ruff_cache .pytest_cache
