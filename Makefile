# Everything a new user needs: `make up` and `make test`.  The virtualenv is
# created and filled from pyproject.toml on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install up test lint check bench bench-auth bench-epg loadtest clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

up: install
	$(BIN)/catena up

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

check: test lint

clean:
	rm -rf $(VENV) var/test .pytest_cache .mypy_cache .ruff_cache

bench-epg: install
	$(BIN)/python -m benchmarks.epg_import
