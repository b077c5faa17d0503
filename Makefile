# One command per job. `make test` works from a fresh clone: venv, install, broker, whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint typecheck broker bench demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

broker:
	bash .ci/ensure-broker

lint: $(STAMP)
	$(BIN)/ruff check logrouter tests bench
	$(BIN)/ruff format --check logrouter tests bench
	$(BIN)/mypy

test: $(STAMP) broker lint
	$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

bench: $(STAMP) broker
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
