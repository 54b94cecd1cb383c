"""One simulated vLLM V1 instance: continuous batching, chunked prefill, prefix cache, preemption.

Fidelity to vLLM's V1 scheduler (vllm/v1/core/sched/scheduler.py, read for semantics):

* Each step has a token budget (``max_num_batched_tokens``). RUNNING requests are served first,
  in admission order: a decoding request takes 1 token, a request still prefilling takes
  ``min(remaining prompt, budget left)`` (chunked prefill). When the budget is spent, later
  running requests get nothing this step.
* A running request whose new KV blocks cannot be allocated (after evicting unreferenced cached
  blocks) preempts the lowest-priority running request, largest ``(priority, arrival)`` (FCFS is
  the special case priority = arrival); the victim frees its blocks, which stay in the prefix
  cache until evicted, and goes back to WAITING to be recomputed (preemption by recompute).
* WAITING requests are admitted only when no preemption happened in the step, while
  ``max_num_seqs`` and the budget allow, in the order the active admission policy returns
  (priorities from the active fairness policy). A request is admitted only when the blocks
  of its whole prefill fit (free plus evictable; vLLM's ``scheduler_reserve_full_isl``), though
  only its first chunk's are allocated; one that does not fit stops admission (head-of-line,
  like vLLM's ``break``). Its cached prefix is the longest cached
  block-aligned prefix, capped so that at least the last prompt token is recomputed.
* The step that computes a request's last prompt token samples its first output token; each
  further step decodes one token. Blocks hold *computed* tokens, so the last output token's KV is
  never written.

Streaming: the host gets ``on_first_token`` when a call's prefill ends, ``on_tokens`` with the
number of tokens each (macro-)step produced, and ``on_finish``; a real-time driver (the live
simulated node) schedules the engine's wake-ups on its event loop and streams tokens as each
short macro-step ends.

Speed: instead of one event per ~30 ms step, the engine plans *macro-steps*: ``k`` consecutive
steps whose batch composition is identical (no prefill finishes, no request finishes, nothing
is admitted or preempted, within ``max_macro_steps``). Their total time is exact for the cost
model because a step's cost is affine in the context lengths, which grow linearly: the sum of
``k`` steps equals ``k`` times the mean of the first and the last step. KV blocks for the whole
macro-step are allocated (evicting if needed) when it is planned, so eviction can run up to
``max_macro_steps`` steps early; an arrival, a retention expiry or a migration truncates the
macro-step at the next step boundary (the arrival is seen by the next ``schedule()``, as in vLLM).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from nodeagent.sim.kvcache import SegmentKVCache
from plugins.views import CacheEntryView, CallView, NodeView, SchedulingContext, node_view

ADMIT = 0
RELEASE = 1


_PREEMPTED, _RELEASED = "preempted", "released"

class AccessEvent(NamedTuple):
    """One entry of a node's cache timeline (see ``SimEngine.access_log``).

    ``kind`` ADMIT: the call was admitted needing ``need`` prompt tokens along ``path`` and
    will have written ``written`` tokens (``path_end`` = where the path's cacheable tokens
    stop); ``first`` is False for a re-admission after preemption. RELEASE: it finished or was
    preempted (its pins and private blocks go) holding ``written`` computed tokens.
    """

    kind: int
    call_id: str
    path: Sequence[int]
    need: int
    written: int
    path_end: int
    first: bool


class PolicySetLike(Protocol):
    """The part of ``plugins.PolicySet`` the engine calls (typed facade over the hooks)."""

    def eviction_order(self, ctx: Any, candidates: Any) -> Any: ...
    def admission_order(self, ctx: Any, node: Any, waiting: Any, priorities: Any) -> Any: ...
    def call_priority(self, ctx: Any, call: Any, wf: Any, tenant: Any) -> Any: ...
    def record_service(self, ctx: Any, call: Any, prefill_tokens: int, decode_tokens: int,
                       gpu_s: float) -> Any: ...


class EngineHost(Protocol):
    """What an engine needs from its surroundings (the cluster harness, or a node agent).

    The host owns workflows and tenants, so it builds the views policies see; the engine owns
    batches and KV. ``wake`` asks the host to call :meth:`SimEngine.on_wake` at ``time_s``.
    """

    def context(self, now: float) -> SchedulingContext: ...
    def call_priority(self, ps: PolicySetLike, ctx: SchedulingContext, call: SimCall,
                      view: CallView) -> float: ...
    def entry_views(self, engine: SimEngine, segs: Sequence[int], now: float,
                    oracle: bool) -> list[CacheEntryView]: ...
    def wake(self, engine: SimEngine, time_s: float, version: int) -> None: ...
    def on_admit(self, engine: SimEngine, call: SimCall, now: float) -> None: ...
    def on_first_token(self, engine: SimEngine, call: SimCall, now: float) -> None: ...
    def on_tokens(self, engine: SimEngine, call: SimCall, n_tokens: int, now: float) -> None: ...
    def on_finish(self, engine: SimEngine, call: SimCall, now: float) -> None: ...
    def on_preempt(self, engine: SimEngine, call: SimCall, now: float) -> None: ...
    def on_stalled(self, engine: SimEngine, now: float) -> bool:
        """Calls wait, none can be admitted, and retention pins hold blocks: release one
        (True when that freed anything: the engine plans again at once, and asks again while
        it still cannot admit)."""
        ...


class SimCall:
    """One LLM call inside an engine: its prompt path, progress and accounting.

    ``path`` is the write path: the prompt's segments root..prompt_segment followed by the
    output segment when the next prompt re-sends the output (so decoded KV is cached there);
    ``path_end`` is the last token position the path covers. Tokens beyond it (output nobody
    re-reads) live in private blocks, as does a partial last block.
    """

    __slots__ = (
        "call_id", "workflow_id", "tenant", "template", "seq", "prompt_tokens",
        "output_tokens", "path", "path_end", "arrival_s", "priority", "generated", "computed",
        "prefill_target", "frontier", "private", "hit_tokens", "admitted_s", "first_token_s",
        "finish_s", "gpu_s", "prefill_done", "decode_done", "reported_prefill",
        "reported_decode", "reported_gpu_s", "preemptions", "recompute_tokens", "state",
        "pinned", "user", "est_uncached", "ever_end",
    )

    def __init__(self, call_id: str, workflow_id: str, tenant: str, template: str, seq: int,
                 prompt_tokens: int, output_tokens: int, path: Sequence[int], path_end: int,
                 arrival_s: float, user: Any = None) -> None:
        if prompt_tokens < 1 or output_tokens < 1:
            raise ValueError(f"call {call_id}: prompt_tokens and output_tokens must be >= 1")
        self.call_id = call_id
        self.workflow_id = workflow_id
        self.tenant = tenant
        self.template = template
        self.seq = seq
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.path = path
        self.path_end = path_end
        self.arrival_s = arrival_s
        self.priority = arrival_s
        self.generated = 0
        self.computed = 0
        self.prefill_target = prompt_tokens
        self.frontier = 0
        self.private = 0
        self.hit_tokens = 0
        self.admitted_s: float | None = None
        self.first_token_s: float | None = None
        self.finish_s: float | None = None
        self.gpu_s = 0.0
        self.prefill_done = 0
        self.decode_done = 0
        self.reported_prefill = 0
        self.reported_decode = 0
        self.reported_gpu_s = 0.0
        self.preemptions = 0
        self.recompute_tokens = 0
        self.state = "new"
        self.pinned = False
        self.user = user
        self.est_uncached = prompt_tokens
        self.ever_end = 0

    def __repr__(self) -> str:
        return (f"SimCall({self.call_id}, state={self.state}, computed={self.computed}/"
                f"{self.prefill_target}, generated={self.generated}/{self.output_tokens})")


@dataclass(slots=True)
class MacroStep:
    """``k`` steps of one batch composition that started at ``t0``.

    Step ``j`` (1-based) takes ``first_s + (j - 1) * delta_s``: the cost model is affine in the
    context lengths, which grow by the same amount every step, so step times form an arithmetic
    progression and both the total and any step boundary are exact.
    """

    t0: float
    k: int
    first_s: float
    delta_s: float
    sched: list[tuple[SimCall, int]]  # (call, tokens per step); prefill when computed < target

    def elapsed(self, steps: int) -> float:
        """Time the first ``steps`` steps take."""
        return steps * self.first_s + self.delta_s * steps * (steps - 1) / 2.0

    @property
    def total_s(self) -> float:
        return self.elapsed(self.k)

    @property
    def end(self) -> float:
        return self.t0 + self.elapsed(self.k)

    def steps_started_by(self, t: float) -> int:
        """Steps begun at or before ``t`` (the one in progress at ``t`` included), >= 1."""
        lo, hi = 1, self.k
        while lo < hi:  # smallest i whose end is >= t
            mid = (lo + hi) // 2
            if self.t0 + self.elapsed(mid) >= t:
                hi = mid
            else:
                lo = mid + 1
        return lo


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Scheduler limits of one instance (vLLM names) and the macro-step cap."""

    max_num_batched_tokens: int
    max_num_seqs: int
    capacity_blocks: int
    block_size: int = 16
    max_macro_steps: int = 128

    def __post_init__(self) -> None:
        for name in ("max_num_batched_tokens", "max_num_seqs", "capacity_blocks", "block_size",
                     "max_macro_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"EngineConfig.{name} must be >= 1")


StepCost = Callable[[int, int, int, int, int], float]
"""(prefill_tokens, prefill_context, decode_seqs, decode_context, prefill_chunks) -> seconds."""


class SimEngine:
    """A simulated vLLM V1 instance driven by a host's event loop (see module docstring).

    Public API: :meth:`submit`, :meth:`withdraw`, :meth:`on_wake` (the host calls it at the time
    it was asked to), :meth:`poke` (something outside changed: re-plan at the next step
    boundary), :meth:`node_view`, and the counters below. ``policies`` returns the current
    policy set; it is read once at the start of each (macro-)step.
    """

    def __init__(self, node_id: str, config: EngineConfig, cache: SegmentKVCache,
                 step_cost: StepCost, policies: Callable[[], PolicySetLike],
                 host: EngineHost) -> None:
        self.node_id = node_id
        self.config = config
        self.cache = cache
        self.step_cost = step_cost
        self.policies = policies
        self.host = host
        self.bs = config.block_size
        self.waiting: list[SimCall] = []
        self.running: list[SimCall] = []
        self.macro: MacroStep | None = None
        self.version = 0
        self._wake_pending = False
        self._blocked_epoch = -1
        self._kv_epoch = 0
        # counters
        self.steps = 0
        self.macro_steps = 0
        self.busy_s = 0.0
        self.prefill_tokens = 0
        self.decode_tokens = 0
        self.hit_tokens = 0
        self.prompt_tokens_admitted = 0
        self.recompute_tokens = 0
        self.recompute_after_preemption = 0
        """Part of recompute_tokens re-done by calls that had been preempted."""
        self.preemptions = 0
        self.private_block_seconds = 0.0
        self._private_mark = 0.0
        full = config.max_num_batched_tokens
        self._prefill_s_per_token = step_cost(full, 0, 0, 0, 1) / full
        self.access_log: list[AccessEvent] | None = None
        """When a list, the node's cache timeline for the offline Belady replays: every
        admission and every release (finish or preemption) of a call, in order."""

    # ------------------------------------------------------------------ public API
    def submit(self, call: SimCall, now: float) -> SimCall:
        """Queue ``call``; the engine admits it at its next step boundary. Returns the handle."""
        call.state = "waiting"
        cap = (call.prefill_target - 1) // self.bs * self.bs
        call.est_uncached = call.prefill_target - self.cache.cached_end(call.path, cap)
        self.waiting.append(call)
        self.poke(now)
        return call

    def withdraw(self, call: SimCall, now: float) -> bool:
        """Take a still-waiting call out of the queue (migration); False if already admitted."""
        if call.state != "waiting" or call not in self.waiting:
            return False
        self.waiting.remove(call)
        call.state = "new"
        self._kv_epoch += 1
        return True

    def poke(self, now: float) -> None:
        """Something changed (an arrival, freed pins): re-plan at the next step boundary.

        An idle engine plans at ``now`` through the host's queue, after every other event of
        the same instant, so simultaneous arrivals meet in one scheduling step as in vLLM.
        """
        self._kv_epoch += 1
        m = self.macro
        if m is None:
            if not self._wake_pending:
                self._wake_pending = True
                self.version += 1
                self.host.wake(self, now, self.version)
            return
        if now >= m.end:
            return  # the pending wake-up re-plans anyway
        done = m.steps_started_by(now)
        if m.t0 + m.elapsed(done) == now and done < m.k:
            done += 1  # a step boundary exactly now: the step starting now already began
        if done < m.k:
            m.k = done
            self.version += 1
            self.host.wake(self, m.end, self.version)

    def on_wake(self, now: float, version: int) -> None:
        """Host callback at the time the engine asked for (stale versions are ignored): apply
        the macro-step that ended, then plan the next one."""
        if version != self.version:
            return
        self._wake_pending = False
        m = self.macro
        self.macro = None
        if m is not None:
            self._apply(m, now)
        boundary = getattr(self.host, "on_step_boundary", None)
        if boundary is not None:  # what arrived during the step reaches the engine now
            boundary(self, now)
        self._plan(now)

    @property
    def idle(self) -> bool:
        return (self.macro is None and not self.waiting and not self.running
                and not self._wake_pending)

    def node_view(self, now: float, with_workflows: bool = True) -> NodeView:
        """This node as routing and admission policies see it (``plugins.views.node_view``).

        KV demand counts what the calls hold or must hold now (prompt plus tokens generated so
        far), never their output still to come, which no live engine knows; pending prefill is
        the running calls' remaining prompt and the waiting calls' uncached prompt (as estimated
        when they arrived).
        """
        bs = self.bs
        demand = 0
        pending = 0
        for c in self.running:
            demand += c.prompt_tokens + c.generated
            if c.computed < c.prefill_target:
                pending += c.prefill_target - c.computed
        for c in self.waiting:
            demand += c.prompt_tokens + c.generated
            pending += c.est_uncached
        return node_view(
            self.node_id, waiting=len(self.waiting), running=len(self.running),
            kv_total_tokens=self.config.capacity_blocks * bs,
            kv_free_tokens=self.cache.free_blocks * bs, demand_tokens=demand,
            pending_prefill_tokens=pending, prefill_s_per_token=self._prefill_s_per_token,
            max_num_seqs=self.config.max_num_seqs,
            cached_workflows=tuple(self.cache.owner_blocks) if with_workflows else ())

    def call_view(self, call: SimCall) -> CallView:
        cap = (call.prefill_target - 1) // self.bs * self.bs
        cached = self.cache.cached_end(call.path, cap)
        return CallView(call_id=call.call_id, workflow_id=call.workflow_id, tenant=call.tenant,
                        template=call.template, seq=call.seq, prompt_tokens=call.prompt_tokens,
                        cached_tokens=cached, arrival_s=call.arrival_s,
                        node_cached_tokens=((self.node_id, cached),))

    # ------------------------------------------------------------------ planning
    def _budget_walk(self) -> tuple[list[tuple[SimCall, int]], int]:
        budget = self.config.max_num_batched_tokens
        sched: list[tuple[SimCall, int]] = []
        for c in self.running:
            if budget <= 0:
                break
            q = min(c.prefill_target - c.computed, budget) if c.computed < c.prefill_target else 1
            sched.append((c, q))
            budget -= q
        return sched, budget

    def _private_for(self, call: SimCall, tokens: int) -> int:
        bs = self.bs
        return -(-tokens // bs) - min(tokens, call.path_end) // bs

    def _need(self, call: SimCall, tokens: int) -> int:
        """Blocks to allocate for ``call`` to hold ``tokens`` computed tokens."""
        tree = self.cache.new_blocks_needed(call.path, call.frontier, min(tokens, call.path_end))
        return tree + self._private_for(call, tokens) - call.private

    def _allocate(self, call: SimCall, tokens: int, now: float) -> None:
        _, call.frontier = self.cache.materialize(call.path, call.frontier,
                                                  min(tokens, call.path_end), now)
        priv = self._private_for(call, tokens)
        self._account_private(now)
        self.cache.reserve_private(priv - call.private)
        call.private = priv

    def close_accounting(self, now: float) -> None:
        """Integrate private-block occupancy up to ``now`` (the end of a run)."""
        self._account_private(max(now, self._private_mark))

    def _account_private(self, now: float) -> None:
        self.private_block_seconds += self.cache.private_blocks * (now - self._private_mark)
        self._private_mark = now

    def _evict(self, need_free: int, ps: PolicySetLike, ctx: SchedulingContext,
               now: float) -> bool:
        cache = self.cache
        if cache.free_blocks >= need_free:
            return True
        oracle = bool(getattr(ps, "requires_oracle", False))

        def order(cands: list[int]) -> list[int]:
            views = self.host.entry_views(self, cands, now, oracle)
            ranked = ps.eviction_order(ctx, views)
            ranked = list(ranked) if ranked else []
            listed = set(ranked)
            # Candidates a policy leaves out go after the listed ones, least recent first.
            la = cache.last_access
            rest = sorted((s for s in cands if s not in listed), key=lambda s: la.get(s, 0.0))
            return ranked + rest

        return cache.evict_until(need_free, order)

    def fits_alone(self, call: SimCall) -> bool:
        """Whether the call could ever run here (its whole KV fits in an empty pool)."""
        total = call.prompt_tokens + call.output_tokens
        return -(-total // self.bs) <= self.config.capacity_blocks

    def _plan(self, now: float) -> None:
        # A step whose preemptions left nothing to run is followed at once by one that admits;
        # one stalled on retention pins is retried after each pin the host lets go.
        replans = 0
        while (outcome := self._plan_once(now)) is not None:
            if outcome == _PREEMPTED:
                replans += 1
                if replans >= 2:
                    return

    def _plan_once(self, now: float) -> str | None:
        """Plan the next macro-step; ``_PREEMPTED`` when nothing ran but preemption freed room,
        ``_RELEASED`` when nothing could run until the host released a retention pin."""
        if not self.running and not self.waiting:
            self.macro = None
            return None
        ps = self.policies()
        ctx = self.host.context(now)
        cfg = self.config
        preempted = False
        while True:
            sched, budget = self._budget_walk()
            need1 = 0
            for c, q in sched:
                need1 += self._need(c, c.computed + q)
            if need1 <= self.cache.free_blocks or self._evict(need1, ps, ctx, now):
                break
            # priorities as of now (as vLLM ranks its running requests at every step); ties go
            # to the call admitted last (vLLM's order; ``running`` is admission order)
            for c in self.running:
                c.priority = self.host.call_priority(ps, ctx, c, self.call_view(c))
            victim = max(reversed(self.running), key=lambda c: (c.priority, c.arrival_s))
            self._preempt(victim, now, ps, ctx)
            preempted = True
            if not self.running:
                sched, budget, need1 = [], cfg.max_num_batched_tokens, 0
                break
        reserved = max(0, need1)
        if (not preempted and self.waiting and budget > 0
                and len(self.running) < cfg.max_num_seqs
                and self._blocked_epoch != self._kv_epoch):
            budget, reserved = self._admit(now, ps, ctx, sched, budget, reserved)
        if not sched:
            self.macro = None
            # Nothing can run while blocks are pinned: retention may delay, never deadlock.
            if (self.waiting and not self.running and not preempted and self.cache.pins
                    and self.host.on_stalled(self, now)):
                return _RELEASED
            return _PREEMPTED if preempted and self.waiting else None
        self._launch(now, sched, ps, ctx)
        return None

    def _admit(self, now: float, ps: PolicySetLike, ctx: SchedulingContext,
               sched: list[tuple[SimCall, int]], budget: int,
               reserved: int) -> tuple[int, int]:
        cfg, bs, cache = self.config, self.bs, self.cache
        order = self._admission_order(now, ps, ctx)
        blocked = False
        for call in order:
            if len(self.running) >= cfg.max_num_seqs or budget <= 0:
                break
            target = call.prefill_target
            cap = (target - 1) // bs * bs
            hit = cache.cached_end(call.path, cap)
            q = min(target - hit, budget)
            cache.pin(call.path)
            call.pinned = True
            call.frontier = 0
            call.computed = hit
            need = self._need(call, hit + q)
            # vLLM admits a call only when its whole prefill fits, counting blocks it could
            # evict (scheduler_reserve_full_isl, on by default in 0.32 and 0.33), and evicts
            # only what the first chunk allocates.
            full = need if hit + q >= target else self._need(call, target)
            if (full + reserved > cache.free_blocks + cache.evictable_blocks
                    or (need + reserved > cache.free_blocks
                        and not self._evict(need + reserved, ps, ctx, now))):
                cache.unpin(call.path)
                call.pinned = False
                call.computed = 0
                blocked = True
                break
            self._admit_one(call, hit, now)
            sched.append((call, q))
            budget -= q
            reserved += need
        if blocked or (self.waiting and len(self.running) >= cfg.max_num_seqs):
            self._blocked_epoch = self._kv_epoch
        return budget, reserved

    def _admission_order(self, now: float, ps: PolicySetLike,
                         ctx: SchedulingContext) -> list[SimCall]:
        if len(self.waiting) == 1:
            c = self.waiting[0]
            c.priority = self.host.call_priority(ps, ctx, c, self.call_view(c))
            return [c]
        views = [self.call_view(c) for c in self.waiting]
        priorities: dict[str, float] = {}
        for c, v in zip(self.waiting, views, strict=True):
            c.priority = self.host.call_priority(ps, ctx, c, v)
            priorities[c.call_id] = c.priority
        ranked = ps.admission_order(ctx, self.node_view(now), views, priorities)
        by_id: dict[str, SimCall] = {c.call_id: c for c in self.waiting}
        out: list[SimCall] = []
        if ranked:
            for cid in ranked:
                picked = by_id.pop(cid, None)
                if picked is not None:
                    out.append(picked)
        # Anything the policy left out keeps queue order behind the ranked calls.
        out.extend(c for c in self.waiting if c.call_id in by_id)
        return out

    def _admit_one(self, call: SimCall, hit: int, now: float) -> None:
        self.waiting.remove(call)
        self.running.append(call)
        call.state = "running"
        call.hit_tokens = hit
        if call.admitted_s is None:
            call.admitted_s = now
        cache = self.cache
        cap = (call.prefill_target - 1) // self.bs * self.bs
        # Prefill below this mark re-computes blocks this node had cached before (counted as
        # the prefill actually runs, so a call preempted mid-prefill counts only what it did).
        call.ever_end = cache.ever_cached_end(call.path, cap)
        self.hit_tokens += hit
        self.prompt_tokens_admitted += call.prefill_target
        cache.touch(call.path, hit, now)
        if self.access_log is not None:
            self.access_log.append(AccessEvent(
                ADMIT, call.call_id, call.path, call.prefill_target,
                call.prompt_tokens + call.output_tokens - 1, call.path_end,
                call.preemptions == 0))
        self.host.on_admit(self, call, now)

    def _launch(self, now: float, sched: list[tuple[SimCall, int]], ps: PolicySetLike,
                ctx: SchedulingContext) -> None:
        cfg = self.config
        k = cfg.max_macro_steps
        for c, q in sched:
            if c.computed < c.prefill_target:
                rem = c.prefill_target - c.computed
                k = min(k, 1 if q >= rem else -(-rem // q) - 1)
            else:
                k = min(k, c.output_tokens - c.generated)
        k = max(1, k)

        def need_for(steps: int) -> int:
            return sum(self._need(c, c.computed + q * steps) for c, q in sched)

        need_k = need_for(k)
        if need_k > self.cache.free_blocks and not self._evict(need_k, ps, ctx, now):
            lo, hi = 1, k  # need_for(1) fits: secured by _plan / _admit
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if need_for(mid) <= self.cache.free_blocks:
                    lo = mid
                else:
                    hi = mid - 1
            k = lo
        for c, q in sched:
            self._allocate(c, c.computed + q * k, now)
        pf_tok = pf_ctx0 = pf_ctx1 = chunks = 0
        nd = d_ctx0 = d_ctx1 = 0
        for c, q in sched:
            if c.computed < c.prefill_target:
                pf_tok += q
                pf_ctx0 += c.computed
                pf_ctx1 += c.computed + q * (k - 1)
                chunks += 1
            else:
                nd += 1
                d_ctx0 += c.computed + 1
                d_ctx1 += c.computed + k
        first = self.step_cost(pf_tok, pf_ctx0, nd, d_ctx0, max(1, chunks))
        last = first if k == 1 else self.step_cost(pf_tok, pf_ctx1, nd, d_ctx1, max(1, chunks))
        m = MacroStep(now, k, first, 0.0 if k == 1 else (last - first) / (k - 1), sched)
        self.macro = m
        self.version += 1
        self.host.wake(self, m.end, self.version)

    # ------------------------------------------------------------------ applying
    def _apply(self, m: MacroStep, now: float) -> None:
        k = m.k
        self.steps += k
        self.macro_steps += 1
        self.busy_s += m.total_s
        tokens_per_step = sum(q for _, q in m.sched)
        finished: list[SimCall] = []
        prefilled: list[SimCall] = []
        host = self.host
        for c, q in m.sched:
            share = m.total_s * q / tokens_per_step
            c.gpu_s += share
            if c.computed < c.prefill_target:
                done = q * k
                if c.computed < c.ever_end:
                    rec = min(c.computed + done, c.ever_end) - c.computed
                    c.recompute_tokens += rec
                    self.recompute_tokens += rec
                    if c.preemptions:
                        self.recompute_after_preemption += rec
                c.computed += done
                c.prefill_done += done
                self.prefill_tokens += done
                if c.computed >= c.prefill_target:
                    c.generated += 1
                    prefilled.append(c)
                    if c.first_token_s is None:
                        c.first_token_s = now
                        host.on_first_token(self, c, now)
                    host.on_tokens(self, c, 1, now)
            else:
                c.computed += k
                c.generated += k
                c.decode_done += k
                self.decode_tokens += k
                host.on_tokens(self, c, k, now)
            if c.generated >= c.output_tokens:
                finished.append(c)
        if finished or prefilled:
            ps = self.policies()
            ctx = host.context(now)
            for c in prefilled:  # service is reported per call segment: prefill, then the rest
                if c.generated < c.output_tokens:
                    self._report_service(c, ps, ctx)
            for c in finished:
                self._finish(c, now, ps, ctx)

    def _release(self, call: SimCall, now: float) -> None:
        if self.access_log is not None:
            self.access_log.append(AccessEvent(RELEASE, call.call_id, (), 0, call.computed,
                                               0, False))
        cache = self.cache
        if call.pinned:
            upto = min(call.computed, call.path_end)
            cache.read(call.path, upto, now)
            cache.touch(call.path, upto, now)
            cache.unpin(call.path)
            call.pinned = False
        self._account_private(now)
        cache.reserve_private(-call.private)
        call.private = 0
        self._kv_epoch += 1

    def _report_service(self, call: SimCall, ps: PolicySetLike, ctx: SchedulingContext) -> None:
        pf = call.prefill_done - call.reported_prefill
        dc = call.decode_done - call.reported_decode
        g = call.gpu_s - call.reported_gpu_s
        if pf or dc:
            ps.record_service(ctx, self.call_view(call), pf, dc, g)
        call.reported_prefill = call.prefill_done
        call.reported_decode = call.decode_done
        call.reported_gpu_s = call.gpu_s

    def _finish(self, call: SimCall, now: float, ps: PolicySetLike,
                ctx: SchedulingContext) -> None:
        self._report_service(call, ps, ctx)
        self._release(call, now)
        self.running.remove(call)
        call.state = "done"
        call.finish_s = now
        self.host.on_finish(self, call, now)

    def _preempt(self, call: SimCall, now: float, ps: PolicySetLike,
                 ctx: SchedulingContext) -> None:
        self._report_service(call, ps, ctx)
        self._release(call, now)
        self.running.remove(call)
        call.state = "waiting"
        call.preemptions += 1
        self.preemptions += 1
        # Recompute: prompt plus the tokens generated so far are prefilled again.
        call.prefill_target = call.prompt_tokens + call.generated
        call.computed = 0
        call.frontier = 0
        self.waiting.insert(0, call)
        self.host.on_preempt(self, call, now)
