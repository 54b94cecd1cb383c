"""(b) A workflow's prefix survives a tool call when the retention policy says so.

Scenario on a 40-block pool: workflow W ends a call and starts a tool; workflow Y then runs and
ends (its blocks are freed later than W's, so vLLM's LRU keeps Y and evicts W first); a large
call X forces evictions; then W's next call arrives. The prefix it finds cached is the measure.
"""

from __future__ import annotations

import pytest

from tests.vllm.fakes import VLLM_MISSING_REASON

pytest.importorskip("vllm", reason=VLLM_MISSING_REASON)

from pathlib import Path

from tests.vllm.harness import (
    FakeClock,
    admit_and_measure_hit,
    make_request,
    make_scheduler,
    run_until_done,
    tokens,
)

W_PROMPT = tokens(0, 96)  # 6 full blocks


def _scenario(
    llama_dir: Path, clock: FakeClock, eviction: str, gap_s: float = 1.0
) -> tuple[int, object]:
    scheduler = make_scheduler(
        llama_dir,
        num_blocks=40,
        clock=clock,
        saga={"policy_set": f"{eviction}:session-affinity:fcfs"},
    )
    scheduler.add_request(make_request("w0", W_PROMPT, workflow="W", arrival_time=clock.now))
    assert run_until_done(scheduler) == ["w0"]
    scheduler.notify_tool_start("W", "bash")
    clock.advance(gap_s)
    scheduler.add_request(
        make_request("y0", tokens(300, 160), workflow="Y", arrival_time=clock.now)
    )
    assert run_until_done(scheduler) == ["y0"]
    scheduler.add_request(
        make_request("x0", tokens(600, 416), workflow="X", max_tokens=1, arrival_time=clock.now)
    )
    assert run_until_done(scheduler) == ["x0"]
    w1 = make_request("w1", [*W_PROMPT, 7, 7, 7, 7, *tokens(900, 28)], workflow="W")
    return admit_and_measure_hit(scheduler, w1), scheduler


def test_ttl_keeps_the_prefix_across_the_tool_call(llama_dir: Path, clock: FakeClock) -> None:
    hit, scheduler = _scenario(llama_dir, clock, "ttl")
    assert hit >= len(W_PROMPT)
    # The pin is dropped once the next call holds the blocks itself.
    assert scheduler.saga_pins.pinned_blocks == 0  # type: ignore[attr-defined]
    assert scheduler.saga_pins.pinned_total >= 6  # type: ignore[attr-defined]


def test_lru_evicts_the_waiting_workflow_first(llama_dir: Path, clock: FakeClock) -> None:
    hit, scheduler = _scenario(llama_dir, clock, "lru")
    assert hit < len(W_PROMPT)
    assert scheduler.saga_pins.pinned_total == 0  # type: ignore[attr-defined]


def test_ttl_expiry_releases_the_pin(llama_dir: Path, clock: FakeClock) -> None:
    # TTL is 60 s by default: a tool longer than that loses the protection.
    hit, scheduler = _scenario(llama_dir, clock, "ttl", gap_s=61.0)
    assert scheduler.saga_pins.released_total >= 6  # type: ignore[attr-defined]
    assert hit < len(W_PROMPT)


@pytest.mark.parametrize("eviction", ["lru", "aeg"])
def test_eviction_policy_decides_whose_blocks_go_first(
    llama_dir: Path, clock: FakeClock, eviction: str
) -> None:
    """(c) Y's blocks are older than W's, so LRU evicts Y's; W's workflow has ended, so the AEG
    policy's value order (finished workflows score 0, and Y, about to return, outranks W) evicts
    W's and protects Y's. The value order is asked for explicitly: this node never reports
    saturation, where the default (``order="adaptive"``) orders by value."""
    policy = "aeg[order=value]" if eviction == "aeg" else eviction
    scheduler = make_scheduler(
        llama_dir,
        num_blocks=40,
        clock=clock,
        saga={"policy_set": f"{policy}:session-affinity:fcfs"},
    )
    y_prompt = tokens(300, 160)
    scheduler.add_request(make_request("y0", y_prompt, workflow="Y", arrival_time=clock.now))
    assert run_until_done(scheduler) == ["y0"]
    clock.advance(1.0)
    scheduler.add_request(make_request("w0", W_PROMPT, workflow="W", arrival_time=clock.now))
    assert run_until_done(scheduler) == ["w0"]
    scheduler.notify_workflow_end("W")
    clock.advance(1.0)
    scheduler.add_request(
        make_request("x0", tokens(600, 416), workflow="X", max_tokens=1, arrival_time=clock.now)
    )
    assert run_until_done(scheduler) == ["x0"]
    y1 = make_request("y1", [*y_prompt, 7, 7, 7, 7, *tokens(900, 16)], workflow="Y")
    hit = admit_and_measure_hit(scheduler, y1)
    if eviction == "lru":
        assert hit < len(y_prompt)
    else:
        assert hit >= len(y_prompt)
        assert scheduler.saga_reorderer.reorders >= 1  # type: ignore[attr-defined]
