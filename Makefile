# The two set-up commands of the README: `make run` and `make test`.
# Both go through `make install`, which only creates .venv and installs into it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: install run test lint format system-packages clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e ".[dev]"
	touch $@

run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python manage.py bootstrap
	@echo "Portal: http://127.0.0.1:$(PORT)/  (Ctrl-C stops everything)"
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho --procfile Procfile start --port $(PORT)

# Installs orthanc, dcmtk, redis-server, postgresql and chromium from Debian when run as
# root and one is missing; in CI a piece still missing afterwards is an error.
system-packages:
	bash scripts/system-packages.sh

test: install system-packages
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run
	PACSNPULL_INSTANCE_DIR="$(CURDIR)/.test-instance" $(BIN)/pytest
	@echo "The same suite on PostgreSQL (a cluster of its own, removed afterwards):"
	PACSNPULL_INSTANCE_DIR="$(CURDIR)/.test-instance-pg" $(BIN)/python -m pulls.sandbox.postgres -- \
		$(BIN)/pytest --reuse-db

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .test-instance .test-instance-pg .pytest_cache
