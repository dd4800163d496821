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

test: $(STAMP)
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
