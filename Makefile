# The two commands a newcomer needs: `make run` (the platform on embedded defaults) and
# `make test` (install everything, then run the whole suite on real servers).
SHELL := /bin/bash
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PYTEST_ARGS ?=
LOCK_ARGS ?=

# `make bench` runs these, each with modest settings (BENCH_<name>) so the whole set takes
# minutes; the README's benchmark table gives the full-size runs. The real-node flip
# (bench/rollout_flip.py --real-node) is left out: it needs root and minutes to start.
BENCHES ?= http_client product_read search_latency checkout rollout_flip operator_scale
BENCH_http_client ?= --calls 1000 --rounds 3
BENCH_product_read ?= --seconds 5 --rounds 3
BENCH_search_latency ?= --products 10000 --events 200 --queries 100
BENCH_checkout ?= --rates 10,25 --seconds 8 --warmup 3
BENCH_rollout_flip ?= --flips 10 --refusals 3
BENCH_operator_scale ?= --counts 50

.PHONY: run test test-fast deps lint crds lock bench $(addprefix bench-,$(BENCHES)) clean-cache

run: deps
	$(VENV)/bin/kommerce up

test: lint
	@start=$$(date +%s); $(VENV)/bin/kommerce testbed prepare; \
	  echo "[setup] test bed prepared in $$(( $$(date +%s) - start ))s"
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Pure tests only: no servers, seconds.
test-fast: deps
	$(VENV)/bin/pytest -m "not kube and not node and not postgres and not redis and not kafka and not stripe and not elasticsearch" $(PYTEST_ARGS)

deps:
	@bash scripts/install-deps.sh

# Style, the import rules between the layers (pyproject.toml's [tool.importlinter]), the
# types ([tool.mypy]: the contracts, operators/ and services/core/ strict, the rest of
# kommerce/ and the services checked), the CRDs against the models they are generated
# from, and the lock against pyproject.toml.
lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache --no-logo
	$(VENV)/bin/mypy kommerce operators services
	$(PYTHON) -m operators.crdgen --check
	$(PYTHON) scripts/check_lock.py

# Regenerate crds/*.yaml from the models in operators/*/spec.py.
crds: deps
	$(PYTHON) -m operators.crdgen

# Re-resolve requirements.lock from pyproject.toml, keeping the pins that still fit;
# `make lock LOCK_ARGS=--upgrade` moves every pin to the newest version allowed.
lock: deps
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --universal --python-version 3.11 \
	  --quiet --custom-compile-command "make lock" -o requirements.lock $(LOCK_ARGS)

bench: $(addprefix bench-,$(BENCHES))

# One benchmark with its modest settings: `make bench-checkout`, or
# `make bench-checkout BENCH_checkout="--rates 50 --seconds 20"`.
$(addprefix bench-,$(BENCHES)): bench-%: deps
	$(PYTHON) bench/$*.py $(BENCH_$*)

clean-cache:
	rm -rf .cache
