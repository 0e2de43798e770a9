# Every target brings up what it needs: a fresh machine only has Python, make and (as root) apt.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck bench system-deps system-deps-tests lock clean

run: $(STAMP) system-deps
	$(BIN)/orchestrator demo

# CI runs `make test`, so the lint gates (style, types, the layers) fail a build as a failing test does.
# TEST_WORKERS=0 runs them in the make process itself, one after another.
TEST_WORKERS ?= 2
test: lint system-deps-tests
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

# core is held to mypy --strict on its own: it is the part every other layer trusts. lint-imports checks
# the layers of docs/architecture.md (the contracts in pyproject.toml); --no-cache because it takes well
# under a second and then leaves no cache folder in the checkout.
lint: $(STAMP)
	$(BIN)/ruff check orchestrator tests bench scripts
	$(BIN)/mypy orchestrator
	$(BIN)/mypy --strict orchestrator/core
	$(BIN)/lint-imports --no-cache

bench: $(STAMP) system-deps
	$(BIN)/python bench/snapshot.py

# The SSH tests need a real sshd and the database tests a PostgreSQL server; neither is on a new
# machine of this kind by default, so install them when we can (root) and say so when we cannot.
system-deps:
	@sh scripts/system-deps.sh

system-deps-tests:
	@sh scripts/system-deps.sh --tests

# The runtime dependencies come from the lock (the versions the image ships, hash-checked), so the
# tests exercise what is deployed; the dev tools on top are not pinned.
$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "make: $(PYTHON) is older than Python 3.11 (pyproject.toml's requires-python); give another: make PYTHON=python3.12 ..." >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes -r requirements.lock
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Re-resolve requirements.lock from pyproject.toml (newest versions its ranges allow, every platform's
# wheels hashed); tests/unit/test_lockfile.py checks the two agree.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
		--custom-compile-command "make lock" -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
