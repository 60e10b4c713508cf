# vdiwatch: `make run` starts the real thing on this machine, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test test-fast test-slow lint golden clean msi

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

## run: start a collector on 127.0.0.1:9847 and an agent for this machine; Ctrl-C stops both
run: $(STAMP)
	$(BIN)/python scripts/run.py

## test: the whole suite, end-to-end tests included
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## test-fast: everything but the slow end-to-end tests
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

## test-slow: only the end-to-end tests that start real processes
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

## msi: the Windows agent's self-contained MSI, build/msi/vdiwatch-agent.msi (needs wixl; downloads cached in build/msi/cache)
msi: $(STAMP)
	$(BIN)/python scripts/build_msi.py

lint: $(STAMP)
	$(BIN)/ruff check .

## golden: regenerate tests/golden/*.prom after a deliberate change of the exposition
golden: $(STAMP)
	VDIWATCH_UPDATE_GOLDEN=1 $(BIN)/python -m pytest tests/collector/test_golden.py tests/collector/test_golden_sessions.py -q

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache test-artifacts
