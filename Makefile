# SAGA: the two commands of the README are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Local services of a development machine; CI (.ci/run) exports its own.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: demo test test-vllm lint install install-dev serve clean

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

# SAGA's vLLM scheduler against the real vLLM 0.33 code on CPU, in its own environment
# (.venv-vllm: torch CPU + vLLM without its GPU dependencies; scripts/setup_vllm_env.sh).
test-vllm:
	scripts/setup_vllm_env.sh
	VLLM_TARGET_DEVICE=cpu HF_HUB_OFFLINE=1 .venv-vllm/bin/python -m pytest -p no:django -p no:cacheprovider tests/vllm

lint: install-dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .venv-vllm var .pytest_cache .ruff_cache .hypothesis
