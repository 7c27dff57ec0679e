# The few commands people type. Everything installs into .venv from uv.lock.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP  := $(VENV)/.synced-$(shell cat uv.lock pyproject.toml 2>/dev/null | cksum | cut -d' ' -f1)

.PHONY: install test-tools run test test-all lint fmt bench stop status clean

$(STAMP): pyproject.toml uv.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv sync --locked --quiet --extra local --extra bench --compile-bytecode
	@rm -f $(VENV)/.synced-* && touch $@

install: $(STAMP) ## create .venv and install the locked dependencies

test-tools: ## Debian tools some tests drive: Chromium (dashboard), promtool and docker-compose (deploy checks)
	@sh scripts/ensure-chromium.sh
	@sh scripts/ensure-promtool.sh

run: install ## start PostgreSQL, the broker and the four services, with demo data (Ctrl-C stops all)
	$(BIN)/python -m shared.devstack run

stop: install ## stop a PostgreSQL left running by a crashed run
	$(BIN)/python -m shared.devstack stop

status: install
	$(BIN)/python -m shared.devstack status

test: install test-tools ## unit + integration tests against a real PostgreSQL and broker (what CI runs)
	$(BIN)/python -m pytest

test-all: install test-tools ## also the long fault and load tests
	$(BIN)/python -m pytest -m "slow or not slow"

lint: install ## ruff + mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services bench tests/support

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install ## benchmarks; results in bench/results/
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache
