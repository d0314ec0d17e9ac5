# The one task entry point, for people and CI alike.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements/lock.txt pyproject.toml | cksum | cut -d' ' -f1)
UV     := $(BIN)/uv
UV_VERSION := 0.13.9
#: pytest-xdist workers: one per core of this 2-core class of machine.
PYTEST_WORKERS ?= 2

.PHONY: install demo test lint typecheck unit bench clean lock

$(STAMP): requirements/lock.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Tether needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	UV_PYTHON_DOWNLOADS=never $(UV) pip install --quiet --python $(BIN)/python --require-hashes -r requirements/lock.txt
	UV_PYTHON_DOWNLOADS=never $(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

## Run Tether on the embedded default (SQLite, dev-mode auto-unseal, demo estate).
demo: $(STAMP)
	$(BIN)/tether dev

## Install everything and run the whole test suite (lint, types, tests).
test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) >&2
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

## Benchmarks; prints JSON.
bench: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) >&2
	@$(BIN)/python -m bench

## Re-lock dependencies after editing pyproject.toml.
lock:
	$(PYTHON) -m venv .venv-lock && .venv-lock/bin/pip install --quiet uv==$(UV_VERSION)
	.venv-lock/bin/uv pip compile pyproject.toml --extra dev --generate-hashes --no-emit-index-url \
		--python-version 3.11 --no-header -o requirements/lock.txt
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) .tether .pytest_cache .mypy_cache .ruff_cache
