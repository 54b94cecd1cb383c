"""Loader for the Weka Claude Code session traces (real coding-agent workflows).

Source: github.com/callanjfox/kv-cache-tester @ 94f6046d, traces/ (Apache-2.0), copied to
../shared/traces/weka_cc/sessions_dev.tar.xz (see PROVENANCE.md there). One JSON per session:
``requests`` [{t, type, model, in, out, hash_ids (64-token blocks, ids local to the session),
input_types, output_types, stop, api_time, think_time}] plus ``subagent`` entries that nest
their own ``requests``.

Mapping to the workload model (each choice checked against the data, 500 sessions):
- one session = one workflow, template ``claude-code``, owner of all its segments (hash ids are
  session-local, so no content is ever shared across sessions);
- call k's prompt shares with the earlier call (of the last ``PARENT_SEARCH_WINDOW``) with the
  longest common hash-id prefix: the whole of that call's prompt (its ``in`` tokens, including
  the unhashed partial last block) when all its blocks match, else ``64 x matched blocks``;
  the remainder up to call k's real ``in`` is one new segment (cut where later calls branch);
- when call k+1 extends call k's whole prompt by more than call k's ``out`` tokens, the first
  ``out`` of them form call k's ``output_segment`` (the assistant turn is re-sent; the trace
  cannot tell whether thinking blocks were dropped, so this is an approximation);
- ``think_time`` on request k+1 is the gap between call k's end and call k+1's start
  (t[k+1] = t[k] + api_time[k] + think_time[k+1] holds within 1.5 s for 99.98% of the 26,609
  call pairs that carry all three fields; with think_time[k] only for 18.5%), so
  ``gap_after_s(k) = think_time(k+1)``; falls back to t[k+1] - t[k] - api_time[k];
- a tool runs after call k when ``stop == "tool_use"`` or call k+1's ``input_types`` contain
  ``tool_result`` (streamed requests often have an empty ``stop``). The trace does not name the
  tool, so it is recorded as the generic ``TOOL_NAME``;
- ``subagent`` entries become their own workflows (template ``claude-code-subagent``, id
  ``<session>/<agent_id>``) arriving at the parent session's arrival + their ``t``;
- sessions carry no absolute start time: every session arrives at 0.0; set arrivals with
  ``load.arrivals_for_load`` or ``model.with_arrivals``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nodeagent.workloads.model import (
    DEFAULT_TENANT,
    CallSpec,
    ContextTree,
    TenantSpec,
    WorkflowSpec,
    Workload,
    WorkloadError,
)
from nodeagent.workloads.prefix_builder import ChainCall, build_chains

WEKA_SOURCE = ("Weka Claude Code sessions, github.com/callanjfox/kv-cache-tester @ 94f6046d "
               "traces/ (Apache-2.0)")
TEMPLATE = "claude-code"
SUBAGENT_TEMPLATE = "claude-code-subagent"
TOOL_NAME = "tool_use"
"""Generic tool name: the trace says a tool ran, not which one."""
BLOCK_TOKENS = 64
PARENT_SEARCH_WINDOW = 4
"""Earlier calls searched for the longest shared prefix; the previous call wins in >99.8% of
calls (38 of 30,892 calls share more with an older one, all within 4 calls back)."""


_COMPACT_PREFIX = "#ids:"
"""Marks strings made by compact_hash_ids, so a string in a malformed trace is still rejected."""
_HASH_IDS_RE = re.compile(rb'"hash_ids":\[([0-9,-]*)\]')
"""A flat integer hash-id array written without spaces (as the traces are)."""
_HASH_IDS_STRING = b'"hash_ids":"' + _COMPACT_PREFIX.encode() + rb'\1"'


def compact_hash_ids(raw: bytes) -> bytes:
    """Rewrite every ``"hash_ids":[1,2,3]`` into the JSON string ``"hash_ids":"#ids:1,2,3"``.

    Why: the 500 dev sessions hold 46M hash ids; json.loads turning each into a Python int takes
    ~3.2 s, while parsing the same arrays as 31k strings takes ~0.3 s (+0.4 s for this
    rewrite), and prefixes of id lists are then prefixes of strings (``common_blocks``).
    Arrays written with spaces (pretty-printed files) are left alone and parsed as lists.
    """
    return _HASH_IDS_RE.sub(_HASH_IDS_STRING, raw)


def hash_key(ids: object, where: str) -> str:
    """Canonical "1,2,3" form of a hash-id list (given as a list or as compact_hash_ids made
    it; any other string is a malformed trace)."""
    if isinstance(ids, str) and ids.startswith(_COMPACT_PREFIX):
        return ids[len(_COMPACT_PREFIX):]
    if isinstance(ids, list) and all(isinstance(x, int) and not isinstance(x, bool)
                                     for x in ids):
        return ",".join(map(str, ids))
    raise WorkloadError(f"{where}: field 'hash_ids' must be a list of integers")


def block_count(key: str) -> int:
    """Number of hash ids in a canonical key."""
    return key.count(",") + 1 if key else 0


def common_blocks(a: str, b: str) -> int:
    """Number of leading hash ids two canonical keys share, using C-speed slice compares
    (a full match costs one compare; otherwise a bisection on characters)."""
    n = min(len(a), len(b))
    if a[:n] != b[:n]:
        lo, hi = 0, n  # invariant: a[:lo] == b[:lo] and a[:hi] != b[:hi]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if a[lo:mid] == b[lo:mid]:
                lo = mid
            else:
                hi = mid
        n = lo
    if n == 0:
        return 0
    complete = a.count(",", 0, n)
    ends_a = n == len(a) or a[n] == ","
    ends_b = n == len(b) or b[n] == ","
    return complete + 1 if ends_a and ends_b and a[n - 1] != "," else complete


def _field(req: dict[str, Any], key: str, where: str) -> Any:
    try:
        return req[key]
    except KeyError:
        raise WorkloadError(f"{where}: missing field {key!r}") from None
    except TypeError:
        raise WorkloadError(f"{where}: expected an object") from None


def _int_field(req: dict[str, Any], key: str, where: str) -> int:
    value = _field(req, key, where)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise WorkloadError(f"{where}: field {key!r} must be a non-negative number")
    return int(value)


def _gap_after(reqs: list[dict[str, Any]], k: int) -> float:
    if k + 1 >= len(reqs):
        return 0.0
    nxt = reqs[k + 1]
    think = nxt.get("think_time")
    if isinstance(think, int | float):
        return max(0.0, float(think))
    api = reqs[k].get("api_time")
    if isinstance(api, int | float):
        return max(0.0, float(nxt.get("t", 0.0)) - float(reqs[k].get("t", 0.0)) - float(api))
    return 0.0


def _tool_after(reqs: list[dict[str, Any]], k: int) -> str | None:
    if k + 1 >= len(reqs):
        return None
    if reqs[k].get("stop") == "tool_use" or "tool_result" in (
            reqs[k + 1].get("input_types") or ()):
        return TOOL_NAME
    return None


def agent_workflow(tree: ContextTree, workflow_id: str, template: str, arrival_s: float,
                   reqs: list[dict[str, Any]], where: str) -> WorkflowSpec:
    """Build one workflow from a list of Weka requests (a session or a subagent)."""
    chain: list[ChainCall] = []
    recent: list[tuple[int, str, int]] = []  # (call index, hash key, blocks) of the last calls
    for k, req in enumerate(reqs):
        w = f"{where} request {k}"
        tokens = _int_field(req, "in", w)
        out = max(1, _int_field(req, "out", w))
        key = hash_key(_field(req, "hash_ids", w), w)
        if tokens < 1:
            raise WorkloadError(f"{w}: field 'in' must be >= 1")
        best_l, best_j, best_len = 0, -1, 0
        for j, prev, prev_len in reversed(recent):
            if prev_len <= best_l:
                continue
            l_ = common_blocks(key, prev)
            if l_ > best_l:
                best_l, best_j, best_len = l_, j, prev_len
        shared = 0
        if best_j >= 0:
            prev_tokens = chain[best_j].total_tokens
            shared = (min(prev_tokens, tokens) if best_l == best_len
                      else min(BLOCK_TOKENS * best_l, prev_tokens, tokens))
        chain.append(ChainCall(best_j, shared, tokens, out, workflow_id))
        recent.append((k, key, block_count(key)))
        if len(recent) > PARENT_SEARCH_WINDOW:
            recent.pop(0)
    if not chain:
        raise WorkloadError(f"{where}: no requests")
    built = build_chains(tree, chain)
    calls = tuple(
        CallSpec(prompt_segment=built.prompt_segment[k], input_tokens=c.total_tokens,
                 output_tokens=c.output_tokens, tool=_tool_after(reqs, k),
                 gap_after_s=_gap_after(reqs, k), output_segment=built.output_segment[k])
        for k, c in enumerate(chain))
    return WorkflowSpec(workflow_id, DEFAULT_TENANT, template, arrival_s, calls)


def session_workflows(tree: ContextTree, session: dict[str, Any],
                      where: str) -> list[WorkflowSpec]:
    """The session's workflow plus one per subagent."""
    if not isinstance(session, dict):
        raise WorkloadError(f"{where}: expected a JSON object")
    sid = str(session.get("id") or Path(where).stem)
    reqs = _field(session, "requests", where)
    if not isinstance(reqs, list):
        raise WorkloadError(f"{where}: field 'requests' must be a list")
    main = [r for r in reqs if not (isinstance(r, dict) and r.get("type") == "subagent")]
    out = [agent_workflow(tree, sid, TEMPLATE, 0.0, main, where)]
    for r in reqs:
        if isinstance(r, dict) and r.get("type") == "subagent" and r.get("requests"):
            aid = str(r.get("agent_id") or f"agent{len(out)}")
            out.append(agent_workflow(tree, f"{sid}/{aid}", SUBAGENT_TEMPLATE,
                                      float(r.get("t", 0.0)), r["requests"],
                                      f"{where} subagent {aid}"))
    return out


HALVES = ("tune", "holdout")
"""The two halves of a session set (``half_of``): tune policies on one, report on the other."""


def half_of(name: str) -> str:
    """Which half a session file belongs to: a hash of its name, so the split is fixed for a
    given file whatever else is in the set (and splits any set about evenly)."""
    digest = hashlib.blake2b(name.rsplit("/", 1)[-1].encode(), digest_size=8).digest()
    return HALVES[digest[0] & 1]


def _iter_selected(path: Path, sessions: int | None, seed: int | None,
                   half: str | None = None) -> Iterator[tuple[str, bytes]]:
    """(name, raw JSON) of the selected sessions in name order, so segment ids do not depend
    on the container; a sorted archive is streamed one session at a time."""

    def select(names: list[str]) -> set[str]:
        names = sorted(n for n in names if half is None or half_of(n) == half)
        if sessions is None or sessions >= len(names):
            return set(names)
        if seed is None:
            return set(names[:sessions])
        return set(random.Random(seed).sample(names, sessions))

    if path.is_dir():
        files = {p.name: p for p in path.glob("*.json")}
        if not files:
            raise WorkloadError(f"weka: no *.json session files in directory {path}")
        for name in sorted(select(list(files))):
            yield name, files[name].read_bytes()
        return
    if path.suffix == ".json":
        yield path.name, path.read_bytes()
        return
    try:
        with tarfile.open(path, "r:*") as tf:
            members = [m for m in tf.getmembers() if m.isfile() and m.name.endswith(".json")]
            if not members:
                raise WorkloadError(f"weka: no *.json session files in archive {path}")
            chosen = select([m.name for m in members])
            wanted = [m for m in members if m.name in chosen]
            if [m.name for m in wanted] == sorted(m.name for m in wanted):
                for m in wanted:  # archive already in id order: stream, one session at a time
                    fh = tf.extractfile(m)
                    if fh is not None:
                        yield m.name, fh.read()
                return
            held: dict[str, bytes] = {}
            for m in wanted:  # unsorted archive: hold the selected sessions, then sort
                fh = tf.extractfile(m)
                if fh is not None:
                    held[m.name] = fh.read()
            for name in sorted(held):
                yield name, held[name]
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise WorkloadError(f"weka: cannot read archive {path}: {exc}") from None


def load_weka(path: str | Path, sessions: int | None = None,
              seed: int | None = None, half: str | None = None) -> Workload:
    """Load Weka Claude Code sessions from a directory of JSON files, one session JSON, or a
    .tar/.tar.xz archive of them.

    ``sessions``: how many sessions (None = all). They are the first N by file name (= session
    id order, trace_0001 ...) when ``seed`` is None, else a seeded random sample of N (loaded in
    id order). ``half`` (``tune`` or ``holdout``) keeps only that half of the sessions
    (:func:`half_of`) before choosing. Raises WorkloadError on a missing path or malformed
    session.
    """
    if half is not None and half not in HALVES:
        raise WorkloadError(f"weka: half must be one of {', '.join(HALVES)}, got {half!r}")
    p = Path(path)
    if not p.exists():
        raise WorkloadError(f"weka: trace path not found: {p}")
    if sessions is not None and sessions < 1:
        raise WorkloadError(f"weka: sessions must be >= 1, got {sessions}")
    tree = ContextTree()
    workflows: list[WorkflowSpec] = []
    for name, raw in _iter_selected(p, sessions, seed, half):
        try:
            session = json.loads(compact_hash_ids(raw))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WorkloadError(f"weka: {name}: invalid JSON: {exc}") from None
        workflows.extend(session_workflows(tree, session, name))
        del raw, session
    workflows.sort(key=lambda w: w.arrival_s)  # stable: sessions stay in id order
    n = len([w for w in workflows if w.template == TEMPLATE])
    if n == 0:
        raise WorkloadError(f"weka: no sessions selected from {p}"
                            + (f" (half {half!r})" if half else ""))
    which = f" ({half} half)" if half else ""
    return Workload(name=f"weka-{n}",
                    source=f"{WEKA_SOURCE}: {n} sessions from {p.name}{which}",
                    tree=tree, workflows=workflows,
                    tenants={DEFAULT_TENANT: TenantSpec(DEFAULT_TENANT)})
