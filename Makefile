# The two commands a new developer needs: `make run` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint fuzz install migrate clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## API on :3000 + worker + beat (embedded SQLite/offline unless env says otherwise)
	$(BIN)/lifetales run

migrate: $(STAMP)
	$(BIN)/lifetales migrate

test: $(STAMP)  ## needs PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379)
	$(BIN)/pytest

fuzz: $(STAMP)  ## schemathesis over every operation, FUZZ_EXAMPLES (500) new examples each
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-500} $(BIN)/pytest tests/test_api_fuzz.py --timeout 0 -p no:cacheprovider -s

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy .

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
