"""Mooncake and Azure loaders."""

from __future__ import annotations

import json
import lzma
from pathlib import Path

import pytest

from nodeagent.workloads.model import WorkloadError
from nodeagent.workloads.request_traces import MOONCAKE_BUCKET_S, load_azure, load_mooncake

TRACES = Path(__file__).resolve().parents[3] / "shared" / "traces"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_mooncake_conversation_shared_prefix_and_jitter(tmp_path: Path) -> None:
    rows = [
        # turn 1 of a conversation: blocks 0,1 (system prompt), 2 (user), 3 (partial)
        {"timestamp": 0, "input_length": 1600, "output_length": 50, "hash_ids": [0, 1, 2, 3]},
        # another user with the same system prompt (blocks 0,1) -> shared, new workflow
        {"timestamp": 3000, "input_length": 1100, "output_length": 20, "hash_ids": [0, 1, 7]},
        # turn 2 of the first conversation: all of its full blocks, longer -> same workflow
        {"timestamp": 9000, "input_length": 2500, "output_length": 30,
         "hash_ids": [0, 1, 2, 5, 6]},
        {"timestamp": 9000, "input_length": 100, "output_length": 0, "hash_ids": [9]},
    ]
    w = load_mooncake(write_jsonl(tmp_path / "m.jsonl", rows), seed=3)
    w.validate()
    by_len = sorted(w.workflows, key=lambda x: -len(x.calls))
    conv = by_len[0]
    assert [c.input_tokens for c in conv.calls] == [1600, 2500]
    assert conv.calls[0].gap_after_s == pytest.approx(9.0, abs=MOONCAKE_BUCKET_S)
    t = w.tree
    # the conversation's second turn extends the whole first prompt
    assert t.common_prefix_tokens(conv.calls[0].prompt_segment,
                                  conv.calls[1].prompt_segment) == 1600
    other = next(x for x in w.workflows if x.calls[0].input_tokens == 1100)
    shared = t.common_prefix_tokens(other.calls[0].prompt_segment,
                                    conv.calls[0].prompt_segment)
    assert shared == 1024
    seg = conv.calls[0].prompt_segment
    while t.end_tokens(seg) > 1024:
        seg = t.parent(seg)
    assert t.owner(seg) is None  # reused across workflows -> shared
    assert min(c.output_tokens for x in w.workflows for c in x.calls) == 1
    arrivals = sorted(x.arrival_s for x in w.workflows)
    assert 0.0 <= arrivals[0] < MOONCAKE_BUCKET_S
    again = load_mooncake(tmp_path / "m.jsonl", seed=3)
    assert [x.arrival_s for x in again.workflows] == [x.arrival_s for x in w.workflows]
    assert [x.arrival_s for x in load_mooncake(tmp_path / "m.jsonl", seed=4).workflows] != \
        [x.arrival_s for x in w.workflows]


def test_mooncake_limit_and_errors(tmp_path: Path) -> None:
    rows = [{"timestamp": 1000 * i, "input_length": 600, "output_length": 5,
             "hash_ids": [10 * i, 10 * i + 1]} for i in range(10)]
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    assert len(load_mooncake(path, limit=4).workflows) == 4
    xz = tmp_path / "m.jsonl.xz"
    xz.write_bytes(lzma.compress(path.read_bytes()))
    assert len(load_mooncake(xz).workflows) == 10
    with pytest.raises(WorkloadError, match="line 1: missing or bad field 'hash_ids'"):
        load_mooncake(write_jsonl(tmp_path / "b.jsonl", [{"timestamp": 0, "input_length": 5,
                                                          "output_length": 1}]))
    (tmp_path / "c.jsonl").write_text("{oops\n")
    with pytest.raises(WorkloadError, match="line 1: invalid JSON"):
        load_mooncake(tmp_path / "c.jsonl")
    with pytest.raises(WorkloadError, match="not found"):
        load_mooncake(tmp_path / "none.jsonl")


def test_azure_rows_are_one_call_workflows(tmp_path: Path) -> None:
    csv_text = ("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                "2023-11-16 18:17:03.9799600,4808,10\n"
                "2023-11-16 18:17:04.0319600,3180,0\n"
                "2023-11-16 18:17:05,100,7\n")
    path = tmp_path / "a.csv"
    path.write_text(csv_text)
    w = load_azure(path)
    w.validate()
    assert [x.arrival_s for x in w.workflows] == pytest.approx([0.0, 0.052, 1.02004])
    assert [x.calls[0].output_tokens for x in w.workflows] == [10, 1, 7]
    segs = [x.calls[0].prompt_segment for x in w.workflows]
    assert all(w.tree.parent(s) == -1 for s in segs) and len(set(segs)) == 3


@pytest.mark.parametrize(("text", "message"), [
    ("A,B\n1,2\n", "expected columns"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,5,5\n", "line 2: bad value"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03,0,5\n", "ContextTokens < 1"),
])
def test_azure_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text(text)
    with pytest.raises(WorkloadError, match=message):
        load_azure(path)


@pytest.mark.skipif(not TRACES.is_dir(), reason="../shared traces absent")
def test_real_request_traces_load_completely() -> None:
    mc = load_mooncake(TRACES / "mooncake" / "conversation_trace.jsonl.xz")
    mc.validate()
    assert mc.n_calls == 12_031
    assert len(mc.workflows) < mc.n_calls  # some conversations were found
    az = load_azure(TRACES / "azure" / "AzureLLMInferenceTrace_code.csv.xz")
    assert len(az.workflows) == 8_819
