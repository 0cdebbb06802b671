# The two commands a newcomer needs: `make run` (the platform on embedded defaults) and
# `make test` (install everything, then run the whole suite on real servers).
SHELL := /bin/bash
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run test test-fast deps lint bench clean-cache

run: deps
	$(VENV)/bin/kommerce up

test: deps
	@start=$$(date +%s); $(VENV)/bin/kommerce testbed prepare; \
	  echo "[setup] test bed prepared in $$(( $$(date +%s) - start ))s"
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Pure tests only: no servers, seconds.
test-fast: deps
	$(VENV)/bin/pytest -m "not kube and not node and not postgres and not redis and not kafka and not stripe and not elasticsearch" $(PYTEST_ARGS)

deps:
	@bash scripts/install-deps.sh

lint: deps
	$(VENV)/bin/ruff check .

clean-cache:
	rm -rf .cache
