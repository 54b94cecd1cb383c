"""tests/vllm_e2e: the whole stack on a real vLLM engine. Runs in the CPU engine's environment
(``make test-vllm-cpu``); from the control plane's environment every module skips itself
(``pytest.importorskip("vllm")``: this file imports no vLLM)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def db(django_db_blocker: Any) -> Iterator[None]:
    """ORM access without a per-test transaction or flush: the live control plane, the nodes
    (other threads and processes) and every test of a module share one cluster. Named ``db`` so
    that pytest-django sets up the test database for these tests (it looks for that name)."""
    with django_db_blocker.unblock():
        yield
