"""The node agent's simulated engine: real-time SimEngine behind the Engine protocol."""

from __future__ import annotations

import pytest

from nodeagent.agent.engine import EngineUnavailable, GenerationRequest, Message, SimScript
from nodeagent.agent.sim_backend import DEFAULT_OUTPUT_TOKENS, SimBackend
from plugins.base import PolicyConfigError
from plugins.manager import PolicyManager

pytestmark = pytest.mark.asyncio

SYSTEM = Message("system", "You are a careful coding agent. " * 100)


def backend(**kwargs: object) -> SimBackend:
    return SimBackend("h100-llama3-8b", model_name="llama-3-8b", speed=1000.0, **kwargs)  # type: ignore[arg-type]


def request(rid: str, workflow: str, messages: tuple[Message, ...], limit: int | None = None,
            script: SimScript | None = None) -> GenerationRequest:
    return GenerationRequest(rid, workflow, "acme", "swe-agent", messages, limit, script=script)


async def run(b: SimBackend, req: GenerationRequest) -> list:
    return [chunk async for chunk in b.generate(req)]


async def test_streams_text_then_one_final_chunk_with_usage() -> None:
    b = backend()
    chunks = await run(b, request("r1", "wf", (SYSTEM, Message("user", "hi")),
                                  script=SimScript(output_tokens=40)))
    final = chunks[-1]
    assert final.finish_reason == "stop"
    assert all(c.finish_reason is None for c in chunks[:-1])
    text = "".join(c.text for c in chunks)
    assert len(text) == 40 * 4  # four characters per simulated token
    assert final.usage.completion_tokens == 40
    assert final.usage.prompt_tokens > 400 and final.usage.cached_tokens == 0


async def test_output_length_defaults_and_max_tokens_truncation() -> None:
    b = backend()
    plain = await run(b, request("a", "w1", (Message("user", "x"),)))
    assert plain[-1].usage.completion_tokens == DEFAULT_OUTPUT_TOKENS
    cut = await run(b, request("b", "w2", (Message("user", "x"),), limit=10,
                               script=SimScript(output_tokens=50)))
    assert cut[-1].finish_reason == "length" and cut[-1].usage.completion_tokens == 10


async def test_a_workflows_next_call_reuses_its_cached_prefix() -> None:
    b = backend()
    first = await run(b, request("r1", "wf", (SYSTEM, Message("user", "fix it")),
                                 script=SimScript(30, "tool_calls", "bash")))
    call = first[-1].tool_calls[0]
    assert call.name == "bash"
    b.tool_started("wf", "bash")
    follow_up = (SYSTEM, Message("user", "fix it"),
                 Message("assistant", "", ((call.name, call.arguments),)),
                 Message("tool", "tests pass " * 30, (), call.call_id))
    second = await run(b, request("r2", "wf", follow_up))
    usage = second[-1].usage
    assert usage.cached_tokens >= first[-1].usage.prompt_tokens // 16 * 16
    assert usage.cached_tokens < usage.prompt_tokens
    assert b.load().prefix_cache_hit_rate > 0


async def test_retention_pins_the_context_during_a_tool_only_when_the_policy_says() -> None:
    """Pinned at tool start under ttl (never under lru), still pinned after the tool ends, and
    released once the workflow's next call has been admitted."""
    for eviction, pinned in (("ttl", True), ("lru", False)):
        b = backend(manager=PolicyManager(initial={"eviction": eviction}))
        first = await run(b, request("r1", "wf", (SYSTEM, Message("user", "go")),
                                     script=SimScript(20, "tool_calls", "pytest")))
        b.tool_started("wf", "pytest")
        assert b.retention.is_held("wf") is pinned
        assert bool(b.cache.pins) is pinned
        b.tool_ended("wf")
        assert b.retention.is_held("wf") is pinned  # until the next call is admitted
        call = first[-1].tool_calls[0]
        await run(b, request("r2", "wf", (SYSTEM, Message("user", "go"), Message(
            "assistant", "", ((call.name, call.arguments),)),
            Message("tool", "ok", (), call.call_id)), script=SimScript(output_tokens=2)))
        assert not b.retention.is_held("wf") and not b.cache.pins


async def test_retention_ends_at_its_deadline() -> None:
    import asyncio

    b = backend(manager=PolicyManager(initial={"eviction": ("ttl", {"ttl_s": 5.0})}))
    await run(b, request("r1", "wf", (SYSTEM, Message("user", "go")),
                         script=SimScript(20, "tool_calls", "pytest")))
    b.tool_started("wf", "pytest")
    assert b.retention.is_held("wf")
    await asyncio.sleep(5.0 / b.speed + 0.05)  # 5 simulated seconds
    assert not b.retention.is_held("wf") and not b.cache.pins


async def test_a_prompt_growing_inside_one_message_hits_its_full_blocks() -> None:
    """Two /v1/completions-style prompts, the second the first plus 400 characters: every
    full block of the first prompt is a hit (vLLM's block hashes chain the same way)."""
    b = backend()
    text = "def handler(event):\n    return process(event)\n" * 200
    first = GenerationRequest("c1", "wf", "acme", "swe-agent", (Message("user", text),), 4,
                              raw_prompt=text)
    done = await run(b, first)
    prompt = done[-1].usage.prompt_tokens
    longer = text + "x" * 400
    second = GenerationRequest("c2", "wf", "acme", "swe-agent", (Message("user", longer),), 4,
                               raw_prompt=longer)
    usage = (await run(b, second))[-1].usage
    assert usage.prompt_tokens == prompt + 100
    assert usage.cached_tokens == prompt // 16 * 16


async def test_live_policy_swap_and_oracle_policies_refused() -> None:
    b = backend()
    b.apply_policy("fairness", "vtc", {})
    assert b.active_policies()["fairness"].startswith("vtc@")
    with pytest.raises(PolicyConfigError, match="simulator replays only"):
        b.apply_policy("eviction", "belady", {})
    with pytest.raises(PolicyConfigError):
        b.apply_policy("fairness", "afs", {"delta_s": -1})
    assert b.active_policies()["fairness"].startswith("vtc@")


async def test_a_prompt_larger_than_the_kv_cache_is_refused() -> None:
    b = backend(kv_capacity_tokens=4096)
    with pytest.raises(EngineUnavailable, match="does not fit"):
        await run(b, request("r", "wf", (Message("user", "x" * 40_000),)))
