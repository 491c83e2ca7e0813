# Atelier: `make demo` runs the whole product locally; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

# Tests use the real PostgreSQL and Redis on loopback; override to point elsewhere.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/atelier
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
# The cache (rate limits, lockouts) gets a Redis database of its own: tests clear it.
TEST_CACHE_URL ?= redis://127.0.0.1:6379/15
PYTEST_ARGS ?=
# Opt-in parallel run: PYTEST_WORKERS="-n 2 --dist loadscope" (docs/testing.md: 1.08x on the
# marketplace and core tests on a quiet 2-core machine; the whole suite not yet run that way).
PYTEST_WORKERS ?=

.PHONY: install demo test services lint bench clean fuzz backup restore

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

services:
	bash scripts/services.sh

demo: install
	bash scripts/demo.sh

test: install services
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_REDIS_URL) \
	REDIS_CACHE_URL=$(TEST_CACHE_URL) \
	SECRET_KEY=test-only ATELIER_HTTPS=0 HF_HUB_OFFLINE=1 \
	$(PY) -m pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports  # the floors: [tool.importlinter] in pyproject.toml
	SECRET_KEY=lint-only $(VENV)/bin/mypy  # the django plugin loads the settings

bench: install services
	bash bench/run_all.sh

# A longer schemathesis run: every operation as every role, FUZZ_EXAMPLES cases each.
FUZZ_EXAMPLES ?= 50
fuzz: install services
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_REDIS_URL) \
	SECRET_KEY=test-only ATELIER_HTTPS=0 HF_HUB_OFFLINE=1 SECURITY_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
	$(PY) -m pytest -p no:cacheprovider tests/security/test_api_fuzz.py -k every_operation $(PYTEST_ARGS)

# Backups (docs/backups.md): DATABASE_URL and MEDIA_ROOT name what to save or fill.
BACKUP_DIR ?= var/backups
backup:
	bash scripts/backup.sh $(BACKUP_DIR)

restore:
	test -n "$(FROM)" || { echo "make restore FROM=var/backups/atelier-..." >&2; exit 2; }
	bash scripts/restore.sh $(FROM)

clean:
	rm -rf var test-artifacts
