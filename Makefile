# The README's two commands: `make run` and `make test`. Both set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run test lint bench bench-ingest clean

# setup.py and the C source too: an edited extension is rebuilt by `make setup` and `make test`
$(STAMP): pyproject.toml setup.py $(wildcard src/keel/traces/*.c src/keel/traces/*.h)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/keel serve

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: setup
	$(BIN)/python benchmarks/gateway.py

bench-ingest: setup
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf $(VENV) .keel .pytest_cache .mypy_cache .ruff_cache
