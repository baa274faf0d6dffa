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

# Paging 1,000,000 operations through the Management API (issue #4); needs a
# PostgreSQL server (CATENA_TEST_DATABASE_URL or the local one) and port 8120.
.PHONY: bench-operations
bench-operations: install
	$(BIN)/python benchmarks/bench_operations_paging.py

# The EPG import against a bare lxml parse, ~58 MB and ~1 GB guides (issue #6);
# needs a PostgreSQL server (CATENA_TEST_DATABASE_URL or the local one).
bench-epg: install
	$(BIN)/python -m benchmarks.epg_import
