"""Turn "call k shares its first S tokens with earlier call j" facts into compact segments.

Trace loaders know, for every call, which earlier call it shares the longest prefix with and how
many tokens that prefix holds (from block hash ids). This module builds the ContextTree from
those facts in two passes so that the tree holds one segment per *run* of new content, not one
per block, while every shared prefix still ends exactly on a segment boundary:

1. normalise each call's parent: a prefix shared with call j that ends inside the part j itself
   inherited from its own parent is really shared with that ancestor;
2. each call's own run (S_i, T_i] is cut where later calls branch off it (and, when the next
   call re-sends the output, after the output tokens, giving the call an ``output_segment``),
   and one segment is created per piece.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodeagent.workloads.model import ROOT, ContextTree


@dataclass(slots=True)
class ChainCall:
    """One call as a loader sees it: ``parent`` = index of the earlier call it shares its first
    ``shared_tokens`` tokens with (-1: none), ``total_tokens`` = prompt length."""

    parent: int
    shared_tokens: int
    total_tokens: int
    output_tokens: int
    owner: str | None


@dataclass(frozen=True, slots=True)
class ChainResult:
    prompt_segment: list[int]
    output_segment: list[int]


def build_chains(tree: ContextTree, calls: list[ChainCall]) -> ChainResult:
    """Add the calls' segments to ``tree``; return each call's prompt and output segment.

    Requires parent < index, 0 <= shared_tokens <= min(parent's total, own total) and
    total_tokens >= 1. A segment reused by a call of another owner is marked shared (None).
    """
    n = len(calls)
    parent = [c.parent for c in calls]
    shared = [c.shared_tokens if c.parent >= 0 else 0 for c in calls]
    for i, c in enumerate(calls):
        if c.total_tokens < 1:
            raise ValueError(f"call {i}: total_tokens must be >= 1")
        p = parent[i]
        if p >= i:
            raise ValueError(f"call {i}: parent {p} must be an earlier call")
        if p >= 0 and not 0 <= shared[i] <= min(calls[p].total_tokens, c.total_tokens):
            raise ValueError(f"call {i}: shared_tokens {shared[i]} out of range")
        while p >= 0 and shared[i] <= shared[p]:
            p = parent[p]
        if p < 0:
            shared[i] = 0
        parent[i] = p

    cuts: list[set[int]] = [{c.total_tokens} for c in calls]
    output_child = [-1] * n  # the call that re-sends call j's output right after j's prompt
    for i in range(n):
        p = parent[i]
        if p < 0:
            continue
        if shared[i] < calls[p].total_tokens:
            cuts[p].add(shared[i])
        elif (output_child[p] < 0 and calls[p].owner == calls[i].owner
              and calls[i].total_tokens - shared[i] > calls[p].output_tokens):
            output_child[p] = i
            cuts[i].add(shared[i] + calls[p].output_tokens)

    pos_seg: list[dict[int, int] | None] = [None] * n
    prompt_seg = [ROOT] * n
    remaining_children = [0] * n
    for i in range(n):
        if parent[i] >= 0:
            remaining_children[parent[i]] += 1
    for i, c in enumerate(calls):
        p = parent[i]
        if p < 0:
            base, pos = ROOT, 0
        else:
            table = pos_seg[p]
            if table is None:  # cannot happen: p's table lives until its last child is built
                raise RuntimeError(f"call {i}: parent {p} position table already freed")
            base, pos = table[shared[i]], shared[i]
            if base != ROOT and tree.owner(base) not in (None, c.owner):
                tree.mark_shared(base)
            remaining_children[p] -= 1
            if remaining_children[p] == 0:
                pos_seg[p] = None  # no later call attaches to p: free its position table
        mine: dict[int, int] = {pos: base}
        for cut in sorted(x for x in cuts[i] if x > pos):
            base = tree.add(base, cut - pos, c.owner)
            pos = cut
            mine[pos] = base
        prompt_seg[i] = mine[c.total_tokens]
        if remaining_children[i]:
            pos_seg[i] = mine
    output_seg = [ROOT] * n
    for j, k in enumerate(output_child):
        if k >= 0:
            # the segment of k's run that starts at j's prompt end and holds j's output, unless
            # another call branches inside the output (then the output is split: not exposed)
            seg = prompt_seg[k]
            target = calls[j].total_tokens + calls[j].output_tokens
            while tree.end_tokens(seg) > target:
                seg = tree.parent(seg)
            if tree.end_tokens(seg) == target and tree.parent(seg) == prompt_seg[j]:
                output_seg[j] = seg
    return ChainResult(prompt_seg, output_seg)
