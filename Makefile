# Set-up and everyday commands. `make search` and `make test` create the virtual
# environment on first use; VENV may point outside the checkout (CI keeps one in ~/.cache).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.automl-installed
TRIALS ?= 100
PYTEST_ARGS ?=

.PHONY: install test lint search bench docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check automl tests benchmarks
	$(BIN)/ruff format --check automl tests benchmarks
	$(BIN)/mypy automl

search: $(STAMP)
	$(BIN)/automl search --trials $(TRIALS)

bench: $(STAMP)
	$(BIN)/python benchmarks/search_digits.py

# docs/reference/ is generated from the code; tests/cli/test_reference.py checks it.
docs: $(STAMP)
	$(BIN)/python -m automl.cli.reference docs/reference

clean:
	rm -rf build *.egg-info .pytest_cache .mypy_cache .ruff_cache
