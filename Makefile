# One command per job. `make test` works from a fresh clone: venv, install, tools, broker,
# lint, type check, whole suite. .ci/run runs exactly `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LINTED := $(wildcard logrouter tests bench)
APT    := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
# Three pytest workers (pytest-xdist) on this 2-core box: the suite mostly waits on brokers
# and daemons (two workers kept the CPUs ~40% busy: 9:36 of pytest; three: 7:51; 7:45-7:51
# for 1,116 tests on 2026-11-30). Whole files per worker so module and session fixtures
# (private nodes, clusters) start once per worker; the longest files first (slow(minutes=N)).
# PYTEST_ARGS= runs serially.
PYTEST_ARGS ?= -n 3 --dist loadfile --no-loadscope-reorder --durations=15

.PHONY: test install tools lint typecheck broker bench demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

# Command-line tools the tests call: docker-compose (compose file check),
# systemd-analyze (unit checks), syslog-ng with its amqp() module (the whole-host
# tests). Installed with apt when missing and we are root; otherwise the tests
# that need them fail with a message saying how to get them.
tools:
	@missing=""; \
	command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 \
	    || missing="$$missing docker-compose"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v syslog-ng >/dev/null 2>&1 || missing="$$missing syslog-ng-core"; \
	ls /usr/lib/syslog-ng/*/libafamqp.so >/dev/null 2>&1 || missing="$$missing syslog-ng-mod-amqp"; \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        echo "tools: installing$$missing with apt" >&2; \
	        apt-get update -qq && $(APT) $$missing >/dev/null; \
	    else \
	        echo "tools: missing$$missing (install them; the tests that need them will fail)" >&2; \
	    fi; \
	fi

broker:
	bash .ci/ensure-broker

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) tools broker lint
	$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

bench: $(STAMP) broker
	$(BIN)/python -m bench

# The quickstart: install, a broker (one answering, else the local rabbitmq-server,
# else Docker compose's), then check + setup + sinks + the demo app + where each
# record went (logrouter/demo.py). Recipes run under /bin/sh (dash on Debian: no
# /dev/tcp), so Python checks whether the broker answers.
DEMO_BROKER ?= 127.0.0.1 5672
DEMO_WAIT   ?= 60
BROKER_ANSWERS = $(BIN)/python -c 'import socket, sys; \
    socket.create_connection((sys.argv[1], int(sys.argv[2])), 2).close()' $(DEMO_BROKER) 2>/dev/null

demo: $(STAMP)
	@[ -n "$${LOGROUTER_URL:-}" ] || $(BROKER_ANSWERS) || bash .ci/ensure-broker >&2 || true
	@[ -n "$${LOGROUTER_URL:-}" ] || $(BROKER_ANSWERS) || { \
	    echo "demo: no RabbitMQ on $(DEMO_BROKER); starting one with docker compose" >&2; \
	    docker compose up -d --wait rabbitmq || docker-compose up -d rabbitmq; \
	    for i in $$(seq 1 $(DEMO_WAIT)); do $(BROKER_ANSWERS) && break; sleep 1; done; }
	$(BIN)/python -m logrouter.demo --full config/demo.toml --var var

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
