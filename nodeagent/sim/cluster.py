"""The cluster harness: N simulated instances, agents that drive workflows, one event loop.

Agents replay each workflow closed-loop: call 0 arrives at the workflow's ``arrival_s``; when a
call finishes, its agent runs the tool (or the user thinks) for ``gap_after_s`` and then sends
the next call. Every call is routed by the active routing policy; every ``rebalance_interval_s``
the routing policy may move workflows between nodes (work stealing: a moved workflow's context
stays cached on the old node as eviction fodder and is prefilled again on the new one).

One global heap orders all events (node macro-step ends, call arrivals, retention expiries,
rebalances, metric samples); ties keep insertion order, so identical seeds give identical runs.
The loop runs until every workflow completes, or until the safety horizon, after which the
unfinished calls are reported as lost rather than the run hanging.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from nodeagent.host.retention import Retention
from nodeagent.sim.clock import Clock, SimulatedClock
from nodeagent.sim.costmodel import CostModel
from nodeagent.sim.engine import AccessEvent, EngineConfig, PolicySetLike, SimCall, SimEngine
from nodeagent.sim.isolated import call_isolated_seconds
from nodeagent.sim.kvcache import SegmentKVCache, cache_entry_views
from nodeagent.sim.pins import SegmentPins
from nodeagent.sim.prepared import PreparedWorkload
from nodeagent.workloads.model import WorkflowSpec
from plugins.views import (
    CacheEntryView,
    CallView,
    NodeView,
    Prediction,
    SchedulingContext,
    TenantView,
    WorkflowEvent,
    WorkflowView,
    workflow_view,
)

_WAKE, _ARRIVAL, _RETENTION_END, _REBALANCE, _SAMPLE = range(5)


class PolicyManagerLike(Protocol):
    """The part of ``plugins.PolicyManager`` the harness uses."""

    def current(self) -> Any: ...
    def observe(self, event: WorkflowEvent, ctx: SchedulingContext | None = None) -> Any: ...
    def predict(self, workflow_id: str, now_s: float | None = None) -> Prediction: ...


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Harness parameters. ``kv_capacity_tokens`` overrides the profile (tests: huge = no
    eviction); ``horizon_s`` bounds simulated time (None: 30 days)."""

    n_instances: int
    rebalance_interval_s: float = 1.0
    max_macro_steps: int = 128
    sample_interval_s: float = 30.0
    horizon_s: float | None = None
    kv_capacity_tokens: int | None = None
    record_access: bool = True

    def __post_init__(self) -> None:
        if self.n_instances < 1:
            raise ValueError("ClusterConfig.n_instances must be >= 1")
        if not self.rebalance_interval_s > 0:
            raise ValueError("ClusterConfig.rebalance_interval_s must be > 0")
        if not self.sample_interval_s > 0:
            raise ValueError("ClusterConfig.sample_interval_s must be > 0")


class WorkflowRun:
    """A workflow's live state in the harness."""

    __slots__ = ("spec", "idx", "state", "home", "calls_done", "service_s", "done_s",
                 "tool_name", "gap_start_s", "next_arrival_s", "call", "lost",
                 "iso_cum", "migrations", "gap_after", "last_path", "iso_current")

    def __init__(self, spec: WorkflowSpec, iso_cum: list[float]) -> None:
        self.spec = spec
        self.idx = 0
        self.state = "pending"
        self.home: int | None = None
        self.calls_done = 0
        self.service_s = 0.0
        self.done_s: float | None = None
        self.tool_name: str | None = None
        self.gap_start_s = 0.0
        self.next_arrival_s: float | None = spec.arrival_s
        self.last_path: Sequence[int] = ()
        """Write path of its last finished call: what retention pins during the next gap."""
        self.call: SimCall | None = None
        self.lost = False
        self.iso_cum = iso_cum
        """iso_cum[i]: isolated seconds of calls 0..i-1 including the gaps after them."""
        self.iso_current = 0.0
        """The call in flight's isolated time, estimated at its arrival (the AEG's expected
        output: no host knows a call's output before it ends)."""
        n = len(spec.calls)
        self.gap_after = [c.gap_after_s if i < n - 1 else 0.0 for i, c in enumerate(spec.calls)]
        self.migrations = 0

    def context_tokens(self) -> int:
        """Tokens of the workflow's context (the contract's ``context_tokens``): the current
        call's prompt, or the last prompt plus its output between calls and once done."""
        calls = self.spec.calls
        if self.state == "waiting_tool" and self.idx > 0:  # idx is already the next call
            last = calls[self.idx - 1]
            return last.input_tokens + last.output_tokens
        if self.idx < len(calls):
            return calls[self.idx].input_tokens
        last = calls[-1]
        return last.input_tokens + last.output_tokens


@dataclass
class NodeStats:
    """Per-node counters at the end of a run."""

    node_id: str
    recompute_tokens: int
    recompute_after_preemption: int
    hit_tokens: int
    prompt_tokens: int
    prefill_tokens: int
    decode_tokens: int
    preemptions: int
    busy_s: float
    steps: int
    macro_steps: int
    evicted_blocks: int
    useful_block_seconds: float
    capacity_blocks: int
    access_log: list[AccessEvent] | None


@dataclass
class TaskResult:
    workflow_id: str
    tenant: str
    arrival_s: float
    done_s: float | None
    tct_s: float | None
    isolated_s: float
    calls: int
    calls_done: int
    migrations: int


@dataclass
class ClusterResult:
    """Everything a run produced; :mod:`nodeagent.bench.metrics` turns it into figures."""

    tasks: list[TaskResult]
    nodes: list[NodeStats]
    calls_total: int
    calls_completed: int
    calls_lost: int
    start_s: float
    end_s: float
    wall_s: float
    timeline: list[dict[str, float]]
    migrations: int
    events: int
    policy_failures: int = 0


class _NodeViews(Mapping[str, NodeView]):
    """Lazy ``ctx.nodes``: a node's view is built only when a policy looks it up."""

    def __init__(self, cluster: Cluster) -> None:
        self._c = cluster

    def __getitem__(self, key: str) -> NodeView:
        i = self._c.node_index[key]
        return self._c.engines[i].node_view(self._c.now)

    def __iter__(self) -> Iterator[str]:
        return iter(self._c.node_index)

    def __len__(self) -> int:
        return len(self._c.engines)


class ClusterContext:
    """The :class:`plugins.views.SchedulingContext` the harness hands to every hook."""

    __slots__ = ("_c", "_nodes")

    def __init__(self, cluster: Cluster) -> None:
        self._c = cluster
        self._nodes = _NodeViews(cluster)

    @property
    def now_s(self) -> float:
        return self._c.now

    @property
    def tenants(self) -> Mapping[str, TenantView]:
        return self._c.tenant_views

    @property
    def nodes(self) -> Mapping[str, NodeView]:
        return self._nodes

    def workflow(self, workflow_id: str) -> WorkflowView | None:
        run = self._c.runs.get(workflow_id)
        return None if run is None else self._c.workflow_view(run)

    def predict(self, workflow_id: str) -> Prediction:
        return self._c.manager.predict(workflow_id, self._c.now)


class Cluster:
    """N simulated vLLM instances serving a prepared workload under one policy manager.

    ``manager`` is a ``plugins.PolicyManager`` (or anything with ``current()``, ``observe(event)``
    and ``predict(workflow_id)``). Run with :meth:`run`; the result is a :class:`ClusterResult`.
    """

    def __init__(self, prepared: PreparedWorkload, cost: CostModel, manager: PolicyManagerLike,
                 config: ClusterConfig, clock: Clock | None = None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.prepared = prepared
        self.cost = cost
        self.manager = manager
        self.config = config
        self.clock: Clock = clock or SimulatedClock()
        self.progress = progress
        profile = cost.profile
        self.bs = profile.block_size
        kv_tokens = config.kv_capacity_tokens or profile.kv_capacity_tokens
        self.capacity_blocks = kv_tokens // self.bs
        ecfg = EngineConfig(max_num_batched_tokens=profile.max_num_batched_tokens,
                            max_num_seqs=profile.max_num_seqs,
                            capacity_blocks=self.capacity_blocks, block_size=self.bs,
                            max_macro_steps=config.max_macro_steps)
        step = cost.step_seconds

        def step_cost(pf: int, pctx: int, nd: int, dctx: int, chunks: int) -> float:
            return step(pf, pctx, nd, dctx, prefill_chunks=chunks)

        self.engines: list[SimEngine] = []
        for i in range(config.n_instances):
            cache = SegmentKVCache(prepared.index, self.capacity_blocks)
            eng = SimEngine(f"node-{i}", ecfg, cache, step_cost, manager.current, self)
            if config.record_access:
                eng.access_log = []
            self.engines.append(eng)
        self.node_index = {e.node_id: i for i, e in enumerate(self.engines)}
        wl = prepared.workload
        self.tenant_views: dict[str, TenantView] = {
            name: TenantView(name=name, weight=t.weight, slo_slowdown=t.slo_slowdown,
                             slo_percentile=t.slo_percentile)
            for name, t in wl.tenants.items()}
        self.runs: dict[str, WorkflowRun] = {}
        for wf in wl.workflows:
            plans = prepared.calls[wf.workflow_id]
            cum = [0.0]
            for j, (p, c) in enumerate(zip(plans, wf.calls, strict=True)):
                gap = c.gap_after_s if j < len(wf.calls) - 1 else 0.0
                cum.append(cum[-1] + p.isolated_s + gap)
            self.runs[wf.workflow_id] = WorkflowRun(wf, cum)
        self.tenant_of = {wf.workflow_id: wf.tenant for wf in wl.workflows}
        self.now = 0.0
        self._heap: list[tuple[float, int, int, Any, int]] = []
        self._seq = 0
        self._ctx = ClusterContext(self)
        self._live = 0
        self.calls_completed = 0
        self.migrations = 0
        self.timeline: list[dict[str, float]] = []
        self._window_hit = 0
        self._window_prompt = 0
        self._homed: list[set[str]] = [set() for _ in self.engines]
        """Workflows whose home is each node (work stealing looks at backlogged nodes' ones)."""
        self._dirty = False
        self._rebalance_pending = False
        self.retention = [self._retention(engine) for engine in self.engines]
        """Per node, the shared host layer's retention (nodeagent.host.retention)."""
        self._arrived: list[list[tuple[WorkflowRun, SimCall, str | None, float]]] = [
            [] for _ in self.engines]
        """Per node, calls that arrived during its step in progress (see ``_on_arrival``)."""
        self.call_log: list[tuple[str, int, str, float, float]] = []
        """(workflow, seq, node, arrival, finish) of every completed call, in finish order."""

    # ------------------------------------------------------------------ event queue
    def _push(self, t: float, kind: int, obj: Any, ver: int = 0) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, obj, ver))

    def wake(self, engine: SimEngine, time_s: float, version: int) -> None:
        self._push(time_s, _WAKE, engine, version)

    def run(self) -> ClusterResult:
        """Replay the whole workload; return the run's raw results."""
        wall0 = time.perf_counter()
        wl = self.prepared.workload
        if not wl.workflows:
            raise ValueError("workload has no workflows")
        start = min(w.arrival_s for w in wl.workflows)
        self.now = start
        for wf in wl.workflows:
            self._push(wf.arrival_s, _ARRIVAL, self.runs[wf.workflow_id])
        self._live = len(wl.workflows)
        self._push(start, _SAMPLE, None)
        horizon = start + (self.config.horizon_s if self.config.horizon_s is not None
                           else 30 * 86400.0)
        events = 0
        heap = self._heap
        pop = heapq.heappop
        total_wf = len(wl.workflows)
        last_progress = -1
        while heap:
            t, _, kind, obj, ver = pop(heap)
            if t > horizon:
                break
            self.clock.advance_to(t)
            self.now = t
            events += 1
            if kind == _WAKE:
                obj.on_wake(t, ver)
            elif kind == _ARRIVAL:
                self._on_arrival(obj, t)
            elif kind == _RETENTION_END:
                self.retention[obj].expire(t)
            elif kind == _REBALANCE:
                self._rebalance_pending = False
                if self._live:
                    self._rebalance(t)
            elif kind == _SAMPLE:
                self._sample(t)
                if self._live:
                    self._push(t + self.config.sample_interval_s, _SAMPLE, None)
            if self.progress is not None:
                done = total_wf - self._live
                if done != last_progress:
                    last_progress = done
                    self.progress(done, total_wf)
            # Drain: when nothing is left but stale wake-ups and samples, stop.
            if not self._live and kind != _SAMPLE and all(e.idle for e in self.engines):
                break
        self._sample(self.now)
        end = max((r.done_s for r in self.runs.values() if r.done_s is not None),
                  default=self.now)
        return self._result(start, end, time.perf_counter() - wall0, events)

    # ------------------------------------------------------------------ views
    def workflow_view(self, run: WorkflowRun) -> WorkflowView:
        """The policy view of a workflow (``plugins.views.workflow_view``): isolated time of
        its finished calls and the gaps between them, plus the current call's or the time in
        the current gap."""
        spec = run.spec
        state = run.state
        done = run.calls_done
        iso_done = run.iso_cum[done] - (run.gap_after[done - 1] if done else 0.0)
        current = 0.0
        if state == "pending":
            state = "queued"
        if state in ("queued", "running"):
            iso_done = run.iso_cum[done]  # the gap before this call is over: it counts whole
            current = run.iso_current
        home = run.home
        cached = 0
        home_id = None
        if home is not None:
            eng = self.engines[home]
            home_id = eng.node_id
            cached = eng.cache.owner_blocks.get(spec.workflow_id, 0) * self.bs
        return workflow_view(
            workflow_id=spec.workflow_id, tenant=spec.tenant, template=spec.template,
            state=state, now_s=self.now, arrival_s=spec.arrival_s, calls_done=done,
            context_tokens=run.context_tokens(), cached_tokens=cached, home_node=home_id,
            tool_name=run.tool_name, gap_since_s=run.gap_start_s if done else None,
            service_s=run.service_s, isolated_done_s=iso_done, isolated_current_s=current)

    def context(self, now: float) -> SchedulingContext:
        return self._ctx

    def call_priority(self, ps: PolicySetLike, ctx: SchedulingContext, call: SimCall,
                      view: CallView) -> float:
        run = self.runs[call.workflow_id]
        tv = self.tenant_views.get(call.tenant) or TenantView(name=call.tenant)
        return float(ps.call_priority(ctx, view, self.workflow_view(run), tv))

    def entry_views(self, engine: SimEngine, segs: Sequence[int], now: float,
                    oracle: bool) -> list[CacheEntryView]:
        return cache_entry_views(engine.cache, segs, engine.node_id, self.tenant_of.get,
                                 self._next_use if oracle else None)

    def _next_use(self, seg: int, owner: str | None) -> float | None:
        """Oracle for Belady: when the segment is next read, from the workload's known future
        (the owner's next call: now if queued or running, else its planned arrival; never if
        that call does not re-send the segment or the workflow is done). Shared segments are
        assumed needed soon."""
        if owner is None:
            return self.now
        run = self.runs.get(owner)
        if run is None or run.state == "done":
            return None
        if run.state in ("queued", "running", "pending"):
            nxt = run.idx if run.state == "pending" else run.calls_done
            when = self.now
        else:
            nxt = run.idx
            when = run.next_arrival_s if run.next_arrival_s is not None else self.now
        calls = run.spec.calls
        if nxt >= len(calls):
            return None
        if not self.prepared.workload.tree.is_ancestor(seg, calls[nxt].prompt_segment):
            return None
        return when

    # ------------------------------------------------------------------ agents
    def _on_arrival(self, run: WorkflowRun, now: float) -> None:
        spec = run.spec
        ended_tool = run.tool_name if run.state == "waiting_tool" else None
        i = run.idx
        call_spec = spec.calls[i]
        plan = self.prepared.calls[spec.workflow_id][i]
        call = SimCall(f"{spec.workflow_id}#{i}", spec.workflow_id, spec.tenant, spec.template,
                       i, call_spec.input_tokens, call_spec.output_tokens, plan.path,
                       plan.path_end, now, user=run)
        run.state = "queued"
        run.call = call
        run.next_arrival_s = None
        ps = self.manager.current()
        ctx = self._ctx
        views = [e.node_view(now) for e in self.engines]
        cached_by_node = tuple(
            (e.node_id, e.cache.cached_end(plan.path, (call_spec.input_tokens - 1)
                                           // self.bs * self.bs)) for e in self.engines)
        expected = self.manager.predict(spec.workflow_id, now).expected_output_tokens
        run.iso_current = call_isolated_seconds(self.cost, call_spec.input_tokens,
                                                plan.own_cached_tokens, max(round(expected), 1))
        home = run.home
        cv = CallView(call_id=call.call_id, workflow_id=spec.workflow_id, tenant=spec.tenant,
                      template=spec.template, seq=i, prompt_tokens=call_spec.input_tokens,
                      cached_tokens=cached_by_node[home][1] if home is not None else 0,
                      arrival_s=now, node_cached_tokens=cached_by_node)
        target = ps.route_call(ctx, cv, self.workflow_view(run), views)
        node = self.node_index[target]
        if home is not None and node != home:  # its pin (if any) is on the old home
            self.retention[home].release(spec.workflow_id, now)
        self._set_home(run, node)
        self._mark_dirty()
        engine = self.engines[node]
        if not engine.fits_alone(call):
            self._lose(run, now)
            return
        if engine.macro is not None:
            # As a vLLM engine core takes requests only between steps, the node learns of the
            # call (its tool's end, its start; stamped with its arrival time) at the end of the
            # step in progress, after what that step finished.
            self._arrived[node].append((run, call, ended_tool, now))
            engine.poke(now)
            return
        self._take(engine, run, call, ended_tool, now)

    def _take(self, engine: SimEngine, run: WorkflowRun, call: SimCall, ended_tool: str | None,
              arrived_s: float) -> None:
        """The node takes an arrived call: it observes the boundary and queues the call."""
        spec = run.spec
        plan = self.prepared.calls[spec.workflow_id][call.seq]
        if ended_tool is not None:
            self._observe("tool_end", run, arrived_s, tool_name=ended_tool)
        cached = engine.cache.cached_end(plan.path, (call.prompt_tokens - 1) // self.bs * self.bs)
        self._observe("call_start", run, arrived_s, prompt_tokens=call.prompt_tokens,
                      cached_tokens=cached, prefix_tokens=plan.own_cached_tokens)
        engine.submit(call, self.now)

    def on_step_boundary(self, engine: SimEngine, now: float) -> None:
        """A step of ``engine`` ended (its results applied): the calls that arrived meanwhile
        reach it now, in arrival order, before it plans the next step."""
        pending = self._arrived[self.node_index[engine.node_id]]
        while pending:
            run, call, ended_tool, arrived_s = pending.pop(0)
            self._take(engine, run, call, ended_tool, arrived_s)

    def _retention(self, engine: SimEngine) -> Retention:
        retention: Retention

        def dropped(workflow_id: str) -> None:
            retention.dropped(workflow_id)

        retention = Retention(SegmentPins(
            engine.cache, lambda workflow_id: self.runs[workflow_id].last_path, engine.poke,
            dropped))
        return retention

    def _mark_dirty(self) -> None:
        """Cluster state changed: make sure a work-stealing round is scheduled."""
        self._dirty = True
        if not self._rebalance_pending:
            self._rebalance_pending = True
            self._push(self.now + self.config.rebalance_interval_s, _REBALANCE, None)

    def _set_home(self, run: WorkflowRun, node: int) -> None:
        if run.home is not None:
            self._homed[run.home].discard(run.spec.workflow_id)
        run.home = node
        self._homed[node].add(run.spec.workflow_id)

    def _observe(self, kind: str, run: WorkflowRun, now: float, **kw: Any) -> None:
        spec = run.spec
        ev = WorkflowEvent(kind=kind, workflow_id=spec.workflow_id, tenant=spec.tenant,
                           template=spec.template, time_s=now, **kw)
        self.manager.observe(ev, self._ctx)

    def on_admit(self, engine: SimEngine, call: SimCall, now: float) -> None:
        run: WorkflowRun = call.user
        run.state = "running"
        self.retention[self.node_index[engine.node_id]].call_admitted(
            run.spec.workflow_id, call.seq, now)
        self._mark_dirty()
        self._window_hit += call.hit_tokens
        self._window_prompt += call.prefill_target

    def on_first_token(self, engine: SimEngine, call: SimCall, now: float) -> None:
        return None

    def on_tokens(self, engine: SimEngine, call: SimCall, n_tokens: int, now: float) -> None:
        return None

    def on_preempt(self, engine: SimEngine, call: SimCall, now: float) -> None:
        run: WorkflowRun = call.user
        run.state = "queued"

    def on_stalled(self, engine: SimEngine, now: float) -> bool:
        return self.retention[self.node_index[engine.node_id]].release_for_room(now) > 0

    def on_finish(self, engine: SimEngine, call: SimCall, now: float) -> None:
        run: WorkflowRun = call.user
        spec = run.spec
        run.calls_done += 1
        run.service_s += call.gpu_s
        run.call = None
        self._mark_dirty()
        self.calls_completed += 1
        self.call_log.append((spec.workflow_id, call.seq, engine.node_id, call.arrival_s, now))
        self._observe("call_end", run, now, output_tokens=call.output_tokens)
        cs = spec.calls[call.seq]
        run.idx = call.seq + 1
        if run.idx >= len(spec.calls):
            run.state = "done"
            run.done_s = now
            if run.home is not None:
                self._homed[run.home].discard(spec.workflow_id)
            self._live -= 1
            self._observe("workflow_end", run, now)
            return
        run.state = "waiting_tool"
        run.tool_name = cs.tool
        run.gap_start_s = now
        run.last_path = call.path
        run.next_arrival_s = now + cs.gap_after_s
        if cs.tool is not None:
            self._observe("tool_start", run, now, tool_name=cs.tool)
            ps = self.manager.current()
            ttl = float(ps.tool_retention_s(self._ctx, self.workflow_view(run)))
            if run.home is not None and self.retention[run.home].tool_started(
                    spec.workflow_id, ttl, now, call.seq + 1):
                self._push(now + ttl, _RETENTION_END, run.home)
        self._push(run.next_arrival_s, _ARRIVAL, run)

    def _lose(self, run: WorkflowRun, now: float) -> None:
        """A call that can never fit any KV pool: the workflow stops; its calls count lost."""
        run.lost = True
        run.state = "done"
        self._live -= 1

    # ------------------------------------------------------------------ work stealing
    def _rebalance(self, now: float) -> None:
        """One work-stealing round.

        Rounds run every ``rebalance_interval_s`` while the cluster is active, and are skipped
        when nothing happened since the previous round (no arrival, admission or completion:
        the policy would see the same state) or when no node has a queue (nothing to steal).
        The candidates are the workflows homed on backlogged nodes (waiting calls > 0) that are
        between calls: in a tool, or with their call still waiting in the queue.
        """
        if not self._dirty:
            return
        self._dirty = False
        hot = [i for i, e in enumerate(self.engines) if e.waiting]
        if not hot:
            return
        runs = self.runs
        movable: list[WorkflowRun] = []
        for i in hot:
            for wf_id in sorted(self._homed[i]):
                r = runs[wf_id]
                if r.state == "waiting_tool" or (
                        r.state == "queued" and r.call is not None
                        and r.call.state == "waiting"):
                    movable.append(r)
        if not movable:
            return
        ps = self.manager.current()
        nodes = [e.node_view(now) for e in self.engines]
        views = [self.workflow_view(r) for r in movable]
        moves = ps.rebalance(self._ctx, nodes, views)
        for m in moves or ():
            run = self.runs.get(m.workflow_id)
            if run is None or run.home is None:
                continue
            src = self.node_index.get(m.source)
            dst = self.node_index.get(m.target)
            if dst is None or src != run.home or dst == src:
                continue
            if run.state == "queued":
                call = run.call
                if call is None or not self.engines[src].withdraw(call, now):
                    continue
                self._set_home(run, dst)
                self.engines[dst].submit(call, now)
            elif run.state == "waiting_tool":
                self.retention[src].release(run.spec.workflow_id, now)
                self._set_home(run, dst)
            else:
                continue
            self._mark_dirty()
            run.migrations += 1
            self.migrations += 1

    # ------------------------------------------------------------------ metrics
    def _sample(self, now: float) -> None:
        used = sum(e.cache.used_blocks for e in self.engines)
        cap = self.capacity_blocks * len(self.engines)
        hr = (self._window_hit / self._window_prompt) if self._window_prompt else 0.0
        self.timeline.append({
            "t": now, "kv_used": used / cap, "hit_rate": hr,
            "running": float(sum(len(e.running) for e in self.engines)),
            "waiting": float(sum(len(e.waiting) for e in self.engines)),
            "done": float(len(self.runs) - self._live)})
        self._window_hit = 0
        self._window_prompt = 0

    def _result(self, start: float, end: float, wall: float, events: int) -> ClusterResult:
        tasks = []
        calls_total = 0
        for wf_id, run in self.runs.items():
            spec = run.spec
            calls_total += len(spec.calls)
            tct = None if run.done_s is None or run.lost else run.done_s - spec.arrival_s
            tasks.append(TaskResult(
                workflow_id=wf_id, tenant=spec.tenant, arrival_s=spec.arrival_s,
                done_s=run.done_s if not run.lost else None, tct_s=tct,
                isolated_s=self.prepared.isolated_tct_s[wf_id], calls=len(spec.calls),
                calls_done=run.calls_done, migrations=run.migrations))
        nodes = []
        for e in self.engines:
            e.close_accounting(end)
            c = e.cache
            nodes.append(NodeStats(
                node_id=e.node_id, recompute_tokens=e.recompute_tokens,
                recompute_after_preemption=e.recompute_after_preemption,
                hit_tokens=e.hit_tokens, prompt_tokens=e.prompt_tokens_admitted,
                prefill_tokens=e.prefill_tokens, decode_tokens=e.decode_tokens,
                preemptions=e.preemptions, busy_s=e.busy_s, steps=e.steps,
                macro_steps=e.macro_steps, evicted_blocks=c.evicted_blocks,
                useful_block_seconds=c.useful_block_seconds + e.private_block_seconds,
                capacity_blocks=c.capacity_blocks, access_log=e.access_log))
        failures = 0
        ev = getattr(self.manager, "events", None)
        if ev is not None:
            try:
                failures = sum(1 for x in ev if getattr(x, "type", "") == "failure")
            except TypeError:
                failures = 0
        return ClusterResult(
            tasks=tasks, nodes=nodes, calls_total=calls_total,
            calls_completed=self.calls_completed,
            calls_lost=calls_total - self.calls_completed, start_s=start, end_s=end,
            wall_s=wall, timeline=self.timeline, migrations=self.migrations, events=events,
            policy_failures=failures)

