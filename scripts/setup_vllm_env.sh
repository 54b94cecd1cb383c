#!/usr/bin/env bash
# Build the separate virtualenv that runs SAGA's vLLM integration tests (tests/vllm) and the
# vLLM conformance check (scripts/vllm_conformance.py).
#
# Why a separate environment: vLLM 0.33 pulls torch and ~3 GB of dependencies and takes seconds to
# import; the control plane must never depend on it. On a CPU-only machine vLLM's compiled kernels
# (vllm._C) do not load and vLLM asks for a newer torch than the CPU wheel on disk; neither matters
# for the scheduler code we test, which is why vLLM is installed with --no-deps and its pure-Python
# runtime dependencies are listed here explicitly (see docs/vllm.md and shared VLLM notes).
#
# Usage: scripts/setup_vllm_env.sh [VENV_DIR]    (default: <repo>/.venv-vllm)
# Idempotent: when the venv already imports vLLM 0.33.0, SAGA, pluggy and pytest it does nothing.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${REPO_ROOT}/.venv-vllm}"
PYTHON="${PYTHON:-python3}"
VLLM_VERSION="0.33.0"
TORCH_VERSION="2.13.0"

RUNTIME_DEPS=(
  packaging pydantic regex numpy psutil cbor2 pyzmq urllib3 transformers aiohttp requests
  openai-harmony openai pillow pybase64 cachetools msgspec cloudpickle uvloop py-cpuinfo
  prometheus_client xgrammar fastapi partial-json-parser llguidance einops
)
TEST_DEPS=(pluggy pytest pytest-asyncio hypothesis)

venv_complete() {
  [[ -x "${VENV}/bin/python" ]] || return 1
  VLLM_TARGET_DEVICE=cpu HF_HUB_OFFLINE=1 "${VENV}/bin/python" - "${VLLM_VERSION}" <<'PY' \
    >/dev/null 2>&1
import importlib.metadata as md
import sys

assert md.version("vllm") == sys.argv[1]
for dist in ("torch", "pluggy", "pytest", "pytest-asyncio", "hypothesis", "saga-controlplane"):
    md.version(dist)
import plugins.manager  # noqa: F401  (SAGA's policy layer, editable install)
import vllm.v1.core.sched.async_scheduler  # noqa: F401
PY
}

if venv_complete; then
  echo "setup_vllm_env: ${VENV} is complete (vllm ${VLLM_VERSION}); nothing to do"
  exit 0
fi

echo "setup_vllm_env: building ${VENV}"
if [[ ! -x "${VENV}/bin/python" ]]; then
  "${PYTHON}" -m venv "${VENV}"
fi
PIP=("${VENV}/bin/pip" install --disable-pip-version-check)
"${PIP[@]}" "torch==${TORCH_VERSION}"
"${PIP[@]}" --no-deps "vllm==${VLLM_VERSION}"
"${PIP[@]}" "${RUNTIME_DEPS[@]}"
"${PIP[@]}" "${TEST_DEPS[@]}"
# SAGA itself, without its control-plane dependencies (Django etc. are not needed here).
"${PIP[@]}" --no-deps -e "${REPO_ROOT}"

if ! venv_complete; then
  echo "setup_vllm_env: ${VENV} was built but does not import vllm ${VLLM_VERSION} + SAGA" >&2
  exit 1
fi
echo "setup_vllm_env: ${VENV} ready"
