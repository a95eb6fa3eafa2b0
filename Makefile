# idsync — the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: test demo demo-stop bench chaos deps venv lint typecheck pytest stack-up stack-down stack-status clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

deps:
	bash deploy/local/install-deps.sh

lint: venv
	$(VENV)/bin/ruff check daemon tests bench deploy
	$(VENV)/bin/ruff format --check daemon tests bench deploy

typecheck: venv
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy tests/harness tests/conftest.py tests/test_harness.py deploy/demo bench

pytest: venv deps
	$(PY) -m pytest $(PYTEST_ARGS)

test: deps venv lint typecheck pytest

stack-up: deps venv
	$(PY) -m tests.harness up

stack-down: venv
	$(PY) -m tests.harness down

stack-status: venv
	$(PY) -m tests.harness status

demo: deps venv
	$(PY) -m deploy.demo start

demo-stop: venv
	$(PY) -m deploy.demo stop

SEED ?=
FAULTS ?= 100
chaos: deps venv
	$(PY) -m tests.chaos --faults $(FAULTS) $(if $(SEED),--seed $(SEED))

bench: deps venv
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
