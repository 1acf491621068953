# Everything a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= data
HOST ?= 127.0.0.1
PORT ?= 8000
export DATA_DIR

.PHONY: install lock run test lint format typecheck db-start db-stop openapi bench clean

# uv installs exactly what uv.lock pins; uv itself is pinned and kept outside the project.
UV_VERSION := 0.13.9
UV_HOME ?= $(HOME)/.cache/tmdb-analytics/uv-$(UV_VERSION)
UV := $(UV_HOME)/bin/uv
export UV_PYTHON_DOWNLOADS := never
# The Go toolchain (from the lock too) only where Go is missing: it builds FerretDB once.
EXTRAS := --extra train --extra dev $(if $(shell command -v go),,--extra localdb)

$(UV):
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/pip install --quiet uv==$(UV_VERSION)

# Bytecode compiled once at install: with PYTHONDONTWRITEBYTECODE set (as here and in most
# containers) every process would otherwise recompile scikit-learn, SciPy and pandas from
# source, which is most of a 12-second start (5 s compiled).
$(BIN)/tmdb-analytics: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON) $(EXTRAS)
	@touch $@

lock: $(UV)  ## re-resolve uv.lock after editing dependencies in pyproject.toml
	$(UV) lock

install: $(BIN)/tmdb-analytics  ## create .venv with the console script and build the local database
	$(BIN)/python -m compileall -q app training  # the project's own modules (seconds; see above)
	$(BIN)/python -c "from app.localdb import ferretdb_binary; print('FerretDB:', ferretdb_binary())"

run: install  ## start the local database, load data from DATA_DIR or TMDB, serve on PORT
	$(BIN)/tmdb-analytics bootstrap --host $(HOST) --port $(PORT)
	$(BIN)/tmdb-analytics serve --host $(HOST) --port $(PORT)

test: install  ## the whole suite against a real local FerretDB
	$(UV) lock --check
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app training tests bench

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
