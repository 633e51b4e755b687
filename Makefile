# The two quick-start commands: `make demo` and `make test`. Both create .venv and install the project.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint dev bench

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
	$(BIN)/pytest

dev: install
	$(BIN)/amd-pipeline dev
