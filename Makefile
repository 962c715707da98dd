# Levqor: `make run` starts it on SQLite, `make test` installs and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint format bench fuzz chaos soak clean

# Bytecode is written here, once: where PYTHONDONTWRITEBYTECODE is set (containers, CI)
# Python would compile Levqor's modules again at every start (0.2 s of `levqor up`'s).
install: $(STAMP)
	@$(BIN)/python -m compileall -q levqor

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is needed")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --editable '.[dev]'
	@touch $(STAMP)

# `make run PORT=9000` (or LEVQOR_PORT=9000 make run); HOST=0.0.0.0 to reach it from the LAN.
PORT ?= $(or $(LEVQOR_PORT),8000)
HOST ?= 127.0.0.1

run: install
	$(BIN)/levqor up --host $(HOST) --port $(PORT)

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy levqor tests bench
	$(BIN)/lint-imports

# The fuzz suite at length (CI runs it with a few examples per operation).
fuzz: install
	LEVQOR_FUZZ_EXAMPLES=$${LEVQOR_FUZZ_EXAMPLES:-200} $(BIN)/pytest -q -m fuzz tests/test_fuzz.py

# The chaos suite at length: 1,000 runs while workers are killed.
chaos: install
	LEVQOR_CHAOS_RUNS=$${LEVQOR_CHAOS_RUNS:-1000} $(BIN)/pytest -q -m chaos tests/test_chaos.py

# 30 minutes at half capacity on PostgreSQL: memory growth, p99 over time, database size.
soak: install
	$(BIN)/python bench/soak.py

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python bench/api.py
	$(BIN)/python bench/queue.py
	$(BIN)/python bench/runs.py
	$(BIN)/python bench/planner.py
	$(BIN)/python bench/billing.py
	$(BIN)/python bench/web.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
