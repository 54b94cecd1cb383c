"""``saga fidelity`` without vLLM: the traces it replays, the token ids a real engine gets, the
simulated side, the comparison, and bad input (the replay against vLLM itself runs in the CPU
engine's environment and is not in CI yet: issue 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane.cli import main
from nodeagent.fidelity.compare import compare, table
from nodeagent.fidelity.replay import EngineShape, ReplayResult
from nodeagent.fidelity.sim_side import replay_sim
from nodeagent.fidelity.trace import TraceSpec, TraceTokens, generate, tagged
from nodeagent.workloads.model import ROOT


def test_a_generated_trace_is_a_closed_loop_agent_workload() -> None:
    spec = TraceSpec(workflows=3, calls=4, seed=7)
    workload = generate(spec)
    again = generate(spec)
    assert workload.tree.to_lists() == again.tree.to_lists()
    assert workload.workflows == again.workflows  # deterministic in the seed
    tree = workload.tree
    system = {tree.path(wf.calls[0].prompt_segment)[0] for wf in workload.workflows}
    assert len(system) == 1 and tree.owner(system.pop()) is None  # one shared system prompt
    for wf in workload.workflows:
        for before, after in zip(wf.calls, wf.calls[1:], strict=False):
            # the next prompt re-sends the previous prompt, its output and a tool result
            assert tree.parent(before.output_segment) == before.prompt_segment
            assert tree.parent(after.prompt_segment) == before.output_segment
            assert before.tool is not None and before.gap_after_s > 0
        assert wf.calls[-1].output_segment == ROOT and wf.calls[-1].tool is None
    arrivals = [wf.arrival_s for wf in workload.workflows]
    assert arrivals == sorted(arrivals)


def test_token_ids_follow_the_prefix_tree_and_the_generated_outputs() -> None:
    workload = generate(TraceSpec(workflows=2, calls=2, seed=3))
    tokens = TraceTokens(workload, vocab_size=640)
    first, second = workload.workflows[0].calls
    prompt = tokens.prompt(first.prompt_segment)
    assert len(prompt) == first.input_tokens and all(16 <= t < 640 for t in prompt)
    other = tokens.prompt(workload.workflows[1].calls[0].prompt_segment)
    system = workload.tree.tokens(workload.tree.path(first.prompt_segment)[0])
    assert prompt[:system] == other[:system] and prompt[system:] != other[system:]
    with pytest.raises(KeyError, match="not been generated"):
        tokens.prompt(second.prompt_segment)
    output = list(range(100, 100 + first.output_tokens))
    tokens.generated(first.output_segment, output)
    again = tokens.prompt(second.prompt_segment)
    assert again[:len(prompt)] == prompt
    assert again[len(prompt):len(prompt) + len(output)] == output
    with pytest.raises(ValueError, match="holds"):
        tokens.generated(first.output_segment, output[:-1])


def test_tagged_traces_share_nothing_a_policy_could_remember() -> None:
    workload = generate(TraceSpec(workflows=2, calls=2))
    tagged_one = tagged(workload, "p1-", 500.0)
    assert {w.workflow_id for w in tagged_one.workflows} == {"p1-wf000", "p1-wf001"}
    assert {w.tenant for w in tagged_one.workflows} == set(tagged_one.tenants) == {"p1-default"}
    assert {w.template for w in tagged_one.workflows} == {"p1-fidelity-agent"}
    owners = {tagged_one.tree.owner(s) for s in tagged_one.tree.segments()}
    assert owners == {None, "p1-wf000", "p1-wf001"}  # private context: the tagged workflow's
    assert [w.arrival_s - 500.0 for w in tagged_one.workflows] == pytest.approx(
        [w.arrival_s for w in workload.workflows])
    tagged_one.validate()


def test_the_simulated_side_records_what_the_comparison_needs() -> None:
    shape = EngineShape(num_blocks=48, block_size=32)
    result = replay_sim(generate(TraceSpec(workflows=4, calls=3, seed=2)), shape, "baseline")
    assert result.finished == 12 and len(result.admission_order) == 12
    assert set(result.cached_tokens) == set(result.admission_order)
    assert all(c % shape.block_size == 0 for c in result.cached_tokens.values())
    assert result.hit_tokens >= sum(result.cached_tokens.values())
    assert any(c > 0 for c in result.cached_tokens.values())  # the shared system prompt
    kinds = {kind for _t, kind, _c in result.events}
    assert {"admit", "finish"} <= kinds


def _result(order: list[str], hits: int, preemptions: int) -> ReplayResult:
    return ReplayResult(side="x", policy_set="baseline",
                        cached_tokens={c: 32 for c in order}, hit_tokens=hits,
                        preemptions=preemptions, admission_order=order,
                        events=[(float(i), "admit", c) for i, c in enumerate(order)])


def test_agreement_targets() -> None:
    same = compare(_result(["a", "b"], 1000, 1), _result(["a", "b"], 1015, 1))
    assert same.meets_targets and same.hit_tokens_error == pytest.approx(0.015)
    assert same.first_event_difference is None
    off = compare(_result(["a", "b"], 1000, 1), _result(["b", "a"], 1030, 2))
    assert not off.hits_within_target and not off.preemptions_equal
    assert not off.same_admission_order and off.first_order_difference == 0
    assert off.first_event_difference is not None
    text = table([same, off])
    assert "met" in text and "missed" in text and "differs at #0" in text


@pytest.mark.parametrize("argv, message", [
    (["--workflows", "0"], "--workflows: must be >= 1"),
    (["--policies", "nope"], "unknown policy set 'nope'"),
    (["--trace", "/nonexistent/trace.json"], "not found"),
    (["--num-blocks", "4"], "more than the engine's context"),
    (["--num-blocks", "1"], "num_blocks must be >= 2"),
    (["--block-size", "24"], "block_size must be a multiple of 16"),
    (["--profile", "tpu-v9"], "unknown profile"),
])
def test_bad_input_exits_2_with_one_line(argv: list[str], message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        code = main(["fidelity", *argv])
        raise SystemExit(code)
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_a_trace_file_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nodeagent.workloads.compact import save_compact

    path = tmp_path / "trace.json"
    save_compact(generate(TraceSpec(workflows=1, calls=1, system_tokens=4000)), path)
    assert main(["fidelity", "--trace", str(path)]) == 2
    assert "more than the engine's context" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "nope"}))
    assert main(["fidelity", "--trace", str(bad)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
