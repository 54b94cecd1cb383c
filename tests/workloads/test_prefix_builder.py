"""Prefix-tree construction from hash-id chains (prefix_builder + the Weka call mapping)."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.workloads.model import ROOT, ContextTree, Workload, WorkloadError
from nodeagent.workloads.prefix_builder import ChainCall, build_chains
from nodeagent.workloads.weka import (
    BLOCK_TOKENS,
    block_count,
    common_blocks,
    compact_hash_ids,
    hash_key,
    session_workflows,
)


def test_extension_chain_is_one_segment_per_run_with_output_segments() -> None:
    tree = ContextTree()
    calls = [ChainCall(-1, 0, 1000, 50, "w"), ChainCall(0, 1000, 1300, 40, "w"),
             ChainCall(1, 1300, 1400, 10, "w")]
    res = build_chains(tree, calls)
    assert [tree.end_tokens(s) for s in res.prompt_segment] == [1000, 1300, 1400]
    # call 0's output (50 tokens) is its own segment, child of call 0's prompt
    o0 = res.output_segment[0]
    assert tree.parent(o0) == res.prompt_segment[0] and tree.tokens(o0) == 50
    assert tree.path(res.prompt_segment[1])[:2] == [res.prompt_segment[0], o0]
    assert res.output_segment[2] == ROOT  # nobody re-sends the last output
    assert len(tree) == 5  # 3 prompt runs + 2 output segments


def test_branch_inside_a_run_cuts_it_once() -> None:
    tree = ContextTree()
    calls = [ChainCall(-1, 0, 1000, 5, "w"), ChainCall(0, 600, 900, 5, "w")]
    res = build_chains(tree, calls)
    a, b = res.prompt_segment
    assert tree.common_prefix_tokens(a, b) == 600
    assert tree.end_tokens(a) == 1000 and tree.end_tokens(b) == 900
    assert len(tree) == 3  # [0,600) shared, [600,1000) and [600,900)


def test_prompt_that_is_a_prefix_of_an_earlier_one_reuses_its_segments() -> None:
    tree = ContextTree()
    res = build_chains(tree, [ChainCall(-1, 0, 1000, 5, "w"), ChainCall(0, 400, 400, 5, "w")])
    assert tree.end_tokens(res.prompt_segment[1]) == 400
    assert tree.is_ancestor(res.prompt_segment[1], res.prompt_segment[0])


def test_prefix_reused_by_another_owner_becomes_shared() -> None:
    tree = ContextTree()
    res = build_chains(tree, [ChainCall(-1, 0, 2048, 5, "a"), ChainCall(0, 1024, 3000, 5, "b")])
    a, b = res.prompt_segment
    first = tree.path(b)[0]
    assert tree.owner(first) is None and tree.end_tokens(first) == 1024
    assert tree.owner(a) == "a" and tree.owner(b) == "b"


def test_shared_prefix_inside_the_inherited_part_moves_to_the_ancestor() -> None:
    tree = ContextTree()
    calls = [ChainCall(-1, 0, 1000, 5, "w"), ChainCall(0, 1000, 2000, 5, "w"),
             ChainCall(1, 500, 700, 5, "w")]  # shares 500 tokens: inside call 0's run
    res = build_chains(tree, calls)
    assert tree.common_prefix_tokens(res.prompt_segment[2], res.prompt_segment[1]) == 500
    assert tree.common_prefix_tokens(res.prompt_segment[2], res.prompt_segment[0]) == 500


def lcp_blocks(a: list[int], b: list[int]) -> int:
    """Reference common-prefix length of two id lists (element by element)."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 30), max_size=30), st.lists(st.integers(0, 30), max_size=30),
       st.integers(0, 30))
def test_common_blocks_matches_element_lcp(a: list[int], b: list[int], shared: int) -> None:
    b = a[:shared] + b  # give them a common prefix of random length
    assert common_blocks(hash_key(a, "t"), hash_key(b, "t")) == lcp_blocks(a, b)
    assert block_count(hash_key(a, "t")) == len(a)


def test_compact_hash_ids_roundtrip_and_rejects_strings() -> None:
    raw = (b'{"requests": [{"hash_ids":[1,22,333]}, {"hash_ids":[]}, {"hash_ids": "x"},'
           b' {"hash_ids": [4, 5,\n 6]}]}')
    reqs = json.loads(compact_hash_ids(raw))["requests"]
    assert isinstance(reqs[0]["hash_ids"], str)  # the compact form was rewritten
    assert hash_key(reqs[0]["hash_ids"], "t") == "1,22,333"
    assert hash_key(reqs[1]["hash_ids"], "t") == ""
    with pytest.raises(WorkloadError, match="list of integers"):
        hash_key(reqs[2]["hash_ids"], "t")
    assert reqs[3]["hash_ids"] == [4, 5, 6]  # arrays with spaces stay lists
    assert hash_key(reqs[3]["hash_ids"], "t") == "4,5,6"
    assert common_blocks("1,22,333", "1,22,3334") == 2
    assert common_blocks("1,2", "1,2,3") == 2 and common_blocks("12", "1") == 0


def random_session(seed: int, n_calls: int) -> dict:
    """Calls whose hash ids extend or branch from the previous call (fresh ids after the cut)."""
    rng = random.Random(seed)
    next_id = 1
    prev: list[int] = []
    reqs = []
    for k in range(n_calls):
        cut = len(prev) if rng.random() < 0.7 else rng.randint(0, len(prev))
        fresh = rng.randint(0 if cut else 1, 40)
        ids = prev[:cut] + list(range(next_id, next_id + fresh))
        next_id += fresh
        tokens = max(1, BLOCK_TOKENS * len(ids) + rng.randint(0, BLOCK_TOKENS - 1))
        reqs.append({"t": float(k), "type": "n", "in": tokens, "out": rng.randint(1, 300),
                     "hash_ids": ids, "input_types": ["tool_result"], "stop": "tool_use",
                     "think_time": float(rng.randint(0, 30)), "api_time": 1.0})
        prev = ids
    return {"id": f"s{seed}", "requests": reqs}


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 40))
def test_weka_tree_is_sound_and_complete(seed: int, n_calls: int) -> None:
    """Sound: two prompts never share more than their hash ids allow. Complete: a call shares
    with the previous call at least all the blocks their hash ids have in common. Exact:
    every prompt is exactly the call's real input length."""
    session = random_session(seed, n_calls)
    tree = ContextTree()
    (wf,) = session_workflows(tree, session, "mem")
    Workload("t", "test", tree, [wf]).validate()  # incl. output segments' shape
    reqs = session["requests"]
    for k, call in enumerate(wf.calls):
        assert tree.end_tokens(call.prompt_segment) == reqs[k]["in"] == call.input_tokens
    for a in range(len(reqs)):
        for b in range(a + 1, len(reqs)):
            ia, ib = reqs[a]["hash_ids"], reqs[b]["hash_ids"]
            lcp = lcp_blocks(ia, ib)
            common = tree.common_prefix_tokens(wf.calls[a].prompt_segment,
                                               wf.calls[b].prompt_segment)
            assert common <= min(reqs[a]["in"], reqs[b]["in"])
            if lcp < min(len(ia), len(ib)):
                assert common <= BLOCK_TOKENS * lcp
            if b == a + 1:
                assert common >= BLOCK_TOKENS * lcp or common == min(reqs[a]["in"],
                                                                     reqs[b]["in"])
