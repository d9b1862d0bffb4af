# The two commands a new developer needs: `make run` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CLIENT := clients/typescript
CLIENT_STAMP := $(CLIENT)/node_modules/.installed

.PHONY: run test client-test lint fuzz install migrate clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(CLIENT_STAMP): $(CLIENT)/package-lock.json
	cd $(CLIENT) && npm ci --no-audit --no-fund
	touch $(CLIENT_STAMP)

install: $(STAMP) $(CLIENT_STAMP)

run: $(STAMP)  ## API on :3000 + worker + beat (embedded SQLite/offline unless env says otherwise)
	$(BIN)/lifetales run

migrate: $(STAMP)
	$(BIN)/lifetales migrate

test: $(STAMP) $(CLIENT_STAMP)  ## needs PostgreSQL (127.0.0.1:5432), Redis (127.0.0.1:6379), chromium
	$(BIN)/pytest
	$(MAKE) client-test

client-test: $(STAMP) $(CLIENT_STAMP)  ## the TypeScript client against a live platform, in Node and Chromium
	cd $(CLIENT) && LIFETALES_BIN=$(abspath $(BIN))/lifetales npm test

fuzz: $(STAMP)  ## schemathesis over every operation, FUZZ_EXAMPLES (500) new examples each
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-500} $(BIN)/pytest tests/test_api_fuzz.py --timeout 0 -p no:cacheprovider -s

lint: $(STAMP) $(CLIENT_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy .
	cd $(CLIENT) && npx tsc -p tsconfig.test.json --noEmit

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
	rm -rf $(CLIENT)/node_modules $(CLIENT)/dist $(CLIENT)/.build
