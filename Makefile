# `make demo` and `make test` work on a fresh machine: both create the virtual environment first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint check serve clean bench

$(STAMP): pyproject.toml requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m shared.cli demo

# The cross-language contract test (tests/contract/test_backstage_messages.py) runs the Backstage module's own
# code, so `make test` installs the module's packages when npm is there (as CI does). npm ci writes
# node_modules/.package-lock.json, so this runs again only when package-lock.json changes: not after
# backstage/ci.sh (which .ci/run calls first) has just installed them.
BACKSTAGE_MODULE ?= backstage/plugins/scaffolder-backend-module-jitgate
NPM := $(shell command -v npm 2>/dev/null)
NODE_DEPS := $(if $(NPM),$(BACKSTAGE_MODULE)/node_modules/.package-lock.json)

$(BACKSTAGE_MODULE)/node_modules/.package-lock.json: $(BACKSTAGE_MODULE)/package-lock.json
	cd $(BACKSTAGE_MODULE) && CI=true npm ci --no-audit --no-fund
	touch $@

test: $(STAMP) $(NODE_DEPS)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check shared tests functions function_app.py bench
	$(VENV)/bin/mypy shared functions function_app.py

check: test lint

serve: $(STAMP)
	$(PY) -m shared.cli serve

clean:
	rm -rf $(VENV) .jitgate .pytest_cache .mypy_cache .ruff_cache

bench: $(STAMP)
	$(PY) -m pip install --quiet -r requirements-bench.txt
	bash bench/run_all.sh
