# allot: the two commands are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
PYTEST_WORKERS ?= 2

.PHONY: help venv services lint typecheck pytest test run bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

venv: $(STAMP) ## Create .venv and install allot with its dev tools

services: ## Install ZooKeeper, Redis and PostgreSQL when missing; start PostgreSQL when down
	@scripts/ensure-services.sh

lint: venv ## ruff check, ruff format --check, and the import contracts (lint-imports)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: venv ## mypy (strict) on the packages, the tests and the benchmarks
	$(BIN)/mypy

pytest: venv services ## Run the tests: unit and integration in PYTEST_WORKERS processes, then end-to-end in one; PYTEST_ARGS passes options
	@scripts/pytest.sh $(BIN)/python $(PYTEST_WORKERS) $(PYTEST_ARGS)

test: lint typecheck pytest ## Everything CI runs: lint, type check, tests

run: venv ## Run a local cluster (ZooKeeper, Redis, 3 nodes, beat, Flower) until Ctrl-C
	@scripts/ensure-services.sh --run
	@scripts/run.sh

bench: venv services ## Run the registry benchmark (others: see README, Benchmarks)
	$(BIN)/python bench/registry.py

clean: ## Remove the venv, caches and local data under var/
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
