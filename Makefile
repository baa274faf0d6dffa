# Everything a new user needs: `make up` and `make test`.  The virtualenv is
# created on first use and filled from the lock files (exact versions, hashes):
# requirements.lock holds what the services need, requirements-dev.lock that plus
# the `dev` and `embedded` extras.  `make lock` regenerates both from pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --custom-compile-command 'make lock' --quiet

.PHONY: install tools up test coverage coverage-report lint check lock bench bench-auth bench-epg loadtest clean browser messages

# pip installs nothing the lock does not pin (--require-hashes), then the project
# itself without dependencies; pip check fails when pyproject.toml asks for a
# package the lock lacks (run `make lock`).
$(STAMP): pyproject.toml requirements.lock requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

up: install
	$(BIN)/catena up

# With COVERAGE=1 (`make coverage`, CI) the same pytest command runs under coverage,
# so CI runs the suite once and gets both answers.
PYTEST := $(if $(COVERAGE),$(BIN)/coverage run -m pytest,$(BIN)/pytest)
test: install tools browser
	$(if $(COVERAGE),rm -rf var/coverage && mkdir -p var/coverage)
	$(PYTEST) $(PYTEST_ARGS)

# `make test` under coverage, following the service processes the tests start
# ([tool.coverage.*] in pyproject.toml), then the report; fails when a test fails
# (after the report) or when the total is under fail_under.
coverage: install
	status=0; $(MAKE) test COVERAGE=1 || status=$$?; $(MAKE) coverage-report && exit $$status

# Each package's figure, then the total, which fails under fail_under.
COVERAGE_PACKAGES := catena admin_api authgate epg_worker
coverage-report: install
	$(BIN)/coverage combine --quiet
	@for package in $(COVERAGE_PACKAGES); do \
		printf '%-12s %s%%\n' $$package "$$($(BIN)/coverage report --include="$$package/*" --format=total --fail-under=0)"; \
	done
	@printf '%-12s ' total && $(BIN)/coverage report --format=total

# promtool (Debian's prometheus package) checks deploy/prometheus/alerts.yml in the
# tests; RUNLEVEL=1 keeps the package from starting a Prometheus server.
tools:
	@command -v promtool >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) env RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends prometheus; }

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

check: test lint

# The console's browser tests drive Debian's Chromium.  Installed with apt when missing;
# if that fails the browser tests skip, except under CI=true, where they fail.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CHROMIUM ?= /usr/bin/chromium

browser:
	@if [ ! -x $(CHROMIUM) ]; then \
		echo "installing Debian's chromium for the console's browser tests"; \
		{ $(SUDO) apt-get update -qq && \
		  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
		|| echo "chromium could not be installed: the browser tests will skip (fail under CI=true)"; \
	fi

# Extract the console's messages and merge them into the English and Russian
# catalogues (admin_api/locale/*/LC_MESSAGES/messages.po); translate the new
# Russian entries, then `make test` checks that none is missing.
LOCALE := admin_api/locale
messages: install
	$(BIN)/pybabel extract -F $(LOCALE)/babel.cfg -k N_ -k NP_:1c,2 --no-location --sort-output --no-wrap --project Catena --version 0.1 -o $(LOCALE)/messages.pot .
	$(BIN)/pybabel update -i $(LOCALE)/messages.pot -d $(LOCALE) --no-fuzzy-matching --ignore-obsolete --no-wrap
	rm $(LOCALE)/messages.pot

# docs/api.md from the OpenAPI document (the part below its marker).
.PHONY: api-doc
api-doc: install
	$(BIN)/python -m admin_api.apidoc

# docs/map.md from the admin API's route table and the gateway's routes.
.PHONY: map
map: install
	$(BIN)/python -m admin_api.routemap

clean:
	rm -rf $(VENV) var/test .pytest_cache .mypy_cache .ruff_cache

# Resolve pyproject.toml's ranges into the two lock files (keeping current pins where
# they still fit; LOCK_ARGS=--upgrade moves everything to the newest allowed).  uv
# resolves once for every platform and Python >= 3.11; the dev lock is constrained
# by the production one, so both pin the same versions.
UV_PIN := $(shell grep -oE '^uv==[^ ]+' requirements-dev.lock 2>/dev/null)
lock:
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	[ -x $(BIN)/uv ] || $(BIN)/pip install --quiet '$(or $(UV_PIN),uv)'
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) $(LOCK_ARGS) -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra embedded -c requirements.lock \
		$(LOCK_FLAGS) $(LOCK_ARGS) -o requirements-dev.lock

# Paging 1,000,000 operations through the Management API (issue #4); needs a
# PostgreSQL server (CATENA_TEST_DATABASE_URL or the local one) and port 8120.
.PHONY: bench-operations
bench-operations: install
	$(BIN)/python benchmarks/bench_operations_paging.py

# Latency of GET /stats with 100,000 subscribers, 1,000 channels and 50,000 open sessions
# while a writer merges gateway batches, and what the stats triggers cost those batches.
.PHONY: bench-stats
bench-stats: install
	$(BIN)/python benchmarks/bench_stats.py $(BENCH_ARGS)

# Latency of GET /channels?limit=100 with 100,000 channels (issue #3); makes and drops its own database.
.PHONY: bench-content
bench-content: install
	$(BIN)/python benchmarks/bench_content_api.py

# Server time p50/p99 and server CPU per request of every console page
# (benchmarks/bench_console.py PAGES) with 100,000 subscribers, 1,000 channels, 50
# packages and 50,000 open sessions, signed in as the owner; makes and drops its own
# database; needs port 9121.  Target: 50 ms p99 per page.  Options:
# make bench-console BENCH_ARGS="--requests 500 --port 9190"
.PHONY: bench-console
bench-console: install
	$(BIN)/python benchmarks/bench_console.py $(BENCH_ARGS)

# The same table for the content screens in a catalogue of 100,000 channels and
# 100,000 packages (benchmarks/bench_console_content.py); needs port 9130.
.PHONY: bench-console-content
bench-console-content: install
	$(BIN)/python benchmarks/bench_console_content.py $(BENCH_ARGS)

# Subscriber search (GET /subscribers?q=) with 100,000 subscribers (issue 11); makes
# and drops its own database; needs port 8130.  Options: make bench-search BENCH_ARGS="--requests 2000"
.PHONY: bench-search
bench-search: install
	$(BIN)/python benchmarks/bench_subscriber_search.py $(BENCH_ARGS)

# The gateway's side-by-side throughput harness (docs/bench-auth.md).  Installs
# Debian's nginx-light and wrk when missing; RUNLEVEL=1 keeps the package from
# starting a system nginx on port 80.  Options: make bench-auth BENCH_ARGS="--duration 30"
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

# The per-item costs behind docs/scaling.md: Redis bytes per entry and session, PostgreSQL
# bytes per play session and operation (private Redis, scratch database).
.PHONY: bench-capacity
bench-capacity: install
	$(BIN)/python -m benchmarks.capacity $(BENCH_ARGS)

# Redis failing under load (a cluster primary and a sentinel primary SIGKILLed, a slot
# range lost, Redis SIGSTOPped): wrong answers, 503 windows, p99 while hung, sessions lost.
.PHONY: bench-redis-faults
bench-redis-faults: install
	$(BIN)/pytest tests/authgate/test_failover.py -s -q -p no:cacheprovider

# The gateway under load while its own private Redis and PostgreSQL (embedded, under
# var/chaos) are hung (SIGSTOP), killed (SIGKILL) and restarted in turn: one table of
# wrong answers, 5xx, slow answers, p99 and events lost per phase (docs/hardening.md).
# About two minutes; gateways on ports 9160-9161.  Options: make chaos CHAOS_ARGS="--hang 5"
.PHONY: chaos
chaos: install
	$(BIN)/python -m loadtests.chaos $(CHAOS_ARGS)

# Micro-benchmarks of the gateway's in-process decision (pytest-benchmark).
.PHONY: bench-decision
bench-decision: install
	$(BIN)/pytest benchmarks/bench_authgate_decision.py -o python_files='bench_*.py' --benchmark-only -p no:cacheprovider

# The EPG import against a bare lxml parse, ~58 MB and ~1 GB guides (issue #6);
# needs a PostgreSQL server (CATENA_TEST_DATABASE_URL or the local one).
bench-epg: install
	$(BIN)/python -m benchmarks.epg_import
