# The two quick-start commands: `make demo` and `make test`. Both create .venv and install the project.
# `make check` is the inner loop (lint and the tests that start no end-to-end process or server).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Every core (at most 4), one worker each; tests marked xdist_group share a worker (docs/architecture.md).
PARALLEL ?= -n auto --maxprocesses 4 --dist loadgroup

.PHONY: install demo test check lint dev bench

$(BIN)/amd-pipeline: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/amd-pipeline

demo: install
	$(BIN)/amd-pipeline demo

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest $(PARALLEL)

check: lint
	$(BIN)/pytest $(PARALLEL) -m "not slow and not postgres"

dev: install
	$(BIN)/amd-pipeline dev
