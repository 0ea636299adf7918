# Turnout. Fresh machine: `make demo`, then `make test`. Both bootstrap what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv prometheus postgresql browser dnsmasq screenshots bootstrap demo demo-stream test unit integration lint bench chaos mutate clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo ">> installing Python packages into $(VENV) (first time: about a minute)"
	$(BIN)/pip install --quiet --disable-pip-version-check --progress-bar off -e '.[local,dev]'
	@touch $(STAMP)

venv: $(STAMP)

# Prometheus 2.42 from Debian (used by the gates and the local stack).
prometheus:
	@command -v prometheus >/dev/null 2>&1 || { \
	  echo ">> installing prometheus (apt)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	@prometheus --version 2>&1 | head -n 1

# PostgreSQL 15 from Debian: the shared store of control-plane replicas (tests and
# `turnout stack up --replicas N` start private clusters of their own).
postgresql:
	@test -x /usr/lib/postgresql/15/bin/postgres || { \
	  echo ">> installing postgresql (apt)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }
	@/usr/lib/postgresql/15/bin/postgres --version

# Headless Chromium and its driver from Debian, for the dashboard's browser test.
browser:
	@command -v chromedriver >/dev/null 2>&1 || { \
	  echo ">> installing chromium and chromium-driver (apt)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }
	@chromedriver --version | head -n 1

# Debian's dnsmasq (the binary only, no system service): the DNS server of the network
# namespace test (servers on other hosts found by name).
dnsmasq:
	@test -x /usr/sbin/dnsmasq || { \
	  echo ">> installing dnsmasq-base (apt)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends dnsmasq-base >/dev/null; }
	@/usr/sbin/dnsmasq --version | head -n 1

bootstrap: venv prometheus postgresql

demo: bootstrap
	$(BIN)/python -m turnout.demo

# The same story for a streaming (decoupled) model, gated on time to first token.
demo-stream: bootstrap
	$(BIN)/python -m turnout.demo --stream --dir .turnout-demo-stream

lint: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports

unit: venv
	$(BIN)/pytest -q -m "not integration"

integration: bootstrap browser dnsmasq
	$(BIN)/pytest -q -m integration

test: bootstrap browser dnsmasq lint
	$(BIN)/pytest -q -ra

# The dashboard screenshots shown in the README (docs/dashboard.png).
screenshots: bootstrap browser
	TURNOUT_SCREENSHOTS=docs $(BIN)/pytest -q tests/test_browser_dashboard.py

bench: bootstrap
	$(BIN)/python -m bench

# Faults under load, one at a time (about 6 minutes): RELIABILITY.md.
chaos: bootstrap
	$(BIN)/python -m bench.chaos

# Mutation testing of the core modules against the fast tests (about 45 minutes on 2
# cores). MUTANTS='xds_server.server*' re-runs some after a full run. Scores per module:
# MUTATION.md. mutmut keeps a copy of the tree in mutants/ and refreshes only Python
# files: a full run starts from a fresh copy, a partial one refreshes the data files.
mutate: venv
	@if [ -z "$(MUTANTS)" ]; then rm -rf mutants; elif [ -d mutants ]; then \
	  for f in $$(git ls-files 'turnout/**.json' 'tests/*.py' 'docs/*' 'examples/**' '*.md'); do mkdir -p mutants/$$(dirname $$f); cp $$f mutants/$$f; done; fi
	$(BIN)/mutmut run --max-children $$(nproc) $(MUTANTS)
	$(BIN)/python -m bench.mutation

clean:
	rm -rf .turnout .turnout-demo .turnout-demo-stream bench/out .pytest_cache .ruff_cache mutants
