# Every target brings up what it needs: a fresh machine only has Python, make and (as root) apt.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck bench system-deps clean

run: $(STAMP) system-deps
	$(BIN)/orchestrator demo

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check orchestrator tests bench
	$(BIN)/mypy orchestrator

bench: $(STAMP) system-deps
	$(BIN)/python bench/snapshot.py

# The SSH tests need a real sshd and the database tests a PostgreSQL server; neither is on a new
# machine of this kind by default, so install them when we can (root) and say so when we cannot.
system-deps:
	@sh scripts/system-deps.sh

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
