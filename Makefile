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
	$(BIN)/ruff format --check .
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

# Latency of GET /channels?limit=100 with 100,000 channels (issue #3); makes and drops its own database.
.PHONY: bench-content
bench-content: install
	$(BIN)/python benchmarks/bench_content_api.py

# Subscriber search (GET /subscribers?q=) with 100,000 subscribers (issue 11); makes
# and drops its own database; needs port 8130.  Options: make bench-search BENCH_ARGS="--requests 2000"
.PHONY: bench-search
bench-search: install
	$(BIN)/python benchmarks/bench_subscriber_search.py $(BENCH_ARGS)

# The gateway's side-by-side throughput harness (docs/bench-auth.md).  Installs
# Debian's nginx-light and wrk when missing; RUNLEVEL=1 keeps the package from
# starting a system nginx on port 80.  Options: make bench-auth BENCH_ARGS="--duration 30"
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
NGINX := $(shell command -v nginx || ls /usr/sbin/nginx 2>/dev/null)

bench-auth: install
	@if [ -z "$(NGINX)" ] || ! command -v wrk >/dev/null; then \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk; \
	fi
	$(BIN)/python -m benchmarks.auth_harness $(BENCH_ARGS)

# Viewers zapping through two gateway processes (locust), then a check of
# play_sessions against every subscriber's limit.  Options: LOADTEST_ARGS="--users 500"
loadtest: install
	$(BIN)/python -m loadtests.run $(LOADTEST_ARGS)

# Micro-benchmarks of the gateway's in-process decision (pytest-benchmark).
.PHONY: bench-decision
bench-decision: install
	$(BIN)/pytest benchmarks/bench_authgate_decision.py -o python_files='bench_*.py' --benchmark-only -p no:cacheprovider

# The EPG import against a bare lxml parse, ~58 MB and ~1 GB guides (issue #6);
# needs a PostgreSQL server (CATENA_TEST_DATABASE_URL or the local one).
bench-epg: install
	$(BIN)/python -m benchmarks.epg_import
