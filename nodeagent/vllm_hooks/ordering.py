"""Admission order and preemption victims from the active fairness and admission policies.

vLLM's waiting queues are either a deque (``fcfs``) or a heap on ``(priority, arrival_time,
request_id)`` (``priority``). SAGA replaces both queue objects with :class:`SagaRequestQueue`,
which keeps vLLM's own semantics for everything vLLM asks of it (append, prepend of a preempted
or skipped request, removal) and is re-ordered before each ``schedule()``. Nothing on the request
is rewritten for that, so ``request.priority`` keeps the user's value (vLLM's ``priority`` API
field / ``X-Vllm-Priority`` header).

Which calls SAGA orders. SAGA schedules workflows: the calls the node agent tagged (see
:mod:`.identity`). The re-ordering is *slot preserving*: take vLLM's own order of the queue, and
refill the positions held by SAGA's calls with those calls in the policies' order; untagged
requests keep their positions. So a queue of SAGA calls is in the policies' order, plain vLLM
traffic is scheduled exactly as vLLM would, and a mix keeps each plain request where vLLM put
it. ``order_untagged`` (config) makes SAGA order untagged requests too, as one-call workflows.

With ``--scheduling-policy priority`` the user's priority stays the primary key: SAGA permutes
its calls only inside each priority band. Preemption victims are picked by vLLM as the running
request with the largest ``(priority, arrival_time)``; :func:`victim_ranks` gives running
requests dense ranks (vLLM's order, SAGA's calls permuted by the fairness policy) that the
scheduler installs on ``request.priority`` only for the duration of ``schedule()``. Under
``fcfs`` vLLM preempts the most recently admitted request and SAGA leaves that as it is; use
``priority`` to get SAGA's victims.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from vllm.v1.core.sched.request_queue import RequestQueue, SchedulingPolicy
from vllm.v1.request import Request

from nodeagent.host.context import HostContext
from nodeagent.host.tracker import WorkflowTracker
from plugins.policyset import PolicySet
from plugins.views import CallView, NodeView, WorkflowView

_FRONT, _RANKED, _UNRANKED = -1, 0, 1


class SagaRequestQueue(RequestQueue):
    """A waiting queue vLLM uses as its own and SAGA re-orders before each step.

    Each request has *vLLM's key*, fixed when it enters: under ``fcfs`` its place in a deque
    (appended to the back, or prepended to the very front when preempted or skipped), under
    ``priority`` ``(user priority, arrival_time, request_id)`` as in vLLM's heap. Until the first
    :meth:`reorder` the queue is in that order. :meth:`reorder` installs a position for every
    queued request; requests that enter afterwards go where vLLM would put them relative to the
    positioned ones (back or front under ``fcfs``, after the positioned requests of their
    priority band under ``priority``) until the next re-order.
    """

    def __init__(self, policy: SchedulingPolicy, user_priority: Callable[[Request], int]) -> None:
        self.policy = policy
        self._user_priority = user_priority
        self._keys: list[tuple[Any, ...]] = []
        self._requests: list[Request] = []
        self._vllm_key: dict[str, tuple[Any, ...]] = {}
        self._position: dict[str, int] = {}
        self._seq = itertools.count()

    # ------------------------------------------------------------------ keys

    def _vllm_order_key(self, request: Request, seq: int, front: bool) -> tuple[Any, ...]:
        if self.policy == SchedulingPolicy.PRIORITY:
            return (self._user_priority(request), request.arrival_time, request.request_id, seq)
        return (0, -seq) if front else (1, seq)

    def _key(self, request: Request, seq: int, front: bool) -> tuple[Any, ...]:
        position = self._position.get(request.request_id)
        if self.policy == SchedulingPolicy.PRIORITY:
            band = self._user_priority(request)
            if position is not None:
                return (band, _RANKED, position, seq)
            return (band, _UNRANKED, request.arrival_time, request.request_id, seq)
        if front:
            return (_FRONT, -seq)
        if position is not None:
            return (_RANKED, position, seq)
        return (_UNRANKED, seq)

    def _insert(self, request: Request, front: bool = False) -> None:
        seq = next(self._seq)
        self._vllm_key[request.request_id] = self._vllm_order_key(request, seq, front)
        key = self._key(request, seq, front)
        index = bisect.bisect_right(self._keys, key)
        self._keys.insert(index, key)
        self._requests.insert(index, request)

    def _forget(self, request: Request) -> None:
        self._position.pop(request.request_id, None)
        self._vllm_key.pop(request.request_id, None)

    def _index(self, request: Request) -> int:
        for i, queued in enumerate(self._requests):
            if queued is request:
                return i
        raise ValueError(f"request {request.request_id!r} is not in the queue")

    # ------------------------------------------------------------------ RequestQueue

    def add_request(self, request: Request) -> None:
        self._insert(request)

    def pop_request(self) -> Request:
        if not self._requests:
            raise IndexError("pop from an empty queue")
        self._keys.pop(0)
        request = self._requests.pop(0)
        self._forget(request)
        return request

    def peek_request(self) -> Request:
        if not self._requests:
            raise IndexError("peek from an empty queue")
        return self._requests[0]

    def prepend_request(self, request: Request) -> None:
        self._insert(request, front=True)

    def prepend_requests(self, requests: Iterable[Request]) -> None:
        # Like deque.extendleft: each goes to the very front, so the last ends up first.
        for request in requests:
            self._insert(request, front=True)

    def remove_request(self, request: Request) -> None:
        index = self._index(request)
        del self._keys[index]
        del self._requests[index]
        self._forget(request)

    def remove_requests(self, requests: Iterable[Request]) -> None:
        doomed = {id(r) for r in requests}
        if not doomed:
            return
        keys: list[tuple[Any, ...]] = []
        kept: list[Request] = []
        for key, request in zip(self._keys, self._requests, strict=True):
            if id(request) in doomed:
                self._forget(request)
            else:
                keys.append(key)
                kept.append(request)
        self._keys, self._requests = keys, kept

    def __bool__(self) -> bool:
        return bool(self._requests)

    def __len__(self) -> int:
        return len(self._requests)

    def __iter__(self) -> Iterator[Request]:
        return iter(list(self._requests))

    def __getitem__(self, index: int) -> Request:
        """Positional access, as vLLM's deque-based FCFS queue allows."""
        return self._requests[index]

    # ------------------------------------------------------------------ SAGA

    def vllm_order(self) -> list[Request]:
        """The queue in the order vLLM's own queue would hold it."""
        keys = self._vllm_key
        return sorted(self._requests, key=lambda r: keys[r.request_id])

    def reorder(self, saga_rank: Mapping[str, int]) -> None:
        """Refill the slots of the ranked requests in rank order (see the module docstring).

        ``saga_rank`` ranks SAGA's calls (lower first); a request it does not rank keeps its
        place in vLLM's order. Under ``priority`` ranked calls move only within their band.
        """
        base = self.vllm_order()
        if saga_rank:
            managed = [r for r in base if r.request_id in saga_rank]
            managed.sort(key=lambda r: (self._user_priority(r), saga_rank[r.request_id]))
            refill = iter(managed)
            base = [next(refill) if r.request_id in saga_rank else r for r in base]
        self._position = {r.request_id: i for i, r in enumerate(base)}
        vllm_keys = self._vllm_key
        self._keys, self._requests = [], []
        for request in base:
            seq = next(self._seq)
            self._keys.append(self._key(request, seq, front=False))
            self._requests.append(request)
        self._vllm_key = vllm_keys


class PriorityTable:
    """Fairness priorities of the calls of one step (one workflow view per workflow)."""

    def __init__(
        self, policy_set: PolicySet, ctx: HostContext, registry: WorkflowTracker
    ) -> None:
        self.policy_set = policy_set
        self.ctx = ctx
        self.registry = registry
        self._workflows: dict[str, WorkflowView | None] = {}

    def view(self, request_id: str) -> CallView | None:
        return self.registry.call_view(request_id)

    def priority(self, call: CallView) -> float:
        wf = self._workflows.get(call.workflow_id)
        if call.workflow_id not in self._workflows:
            wf = self._workflows[call.workflow_id] = self.ctx.workflow(call.workflow_id)
        if wf is None:
            return math.inf
        return self.policy_set.call_priority(self.ctx, call, wf, self.ctx.tenant(call.tenant))


def admission_ranks(
    table: PriorityTable,
    waiting: Sequence[Request],
    node: NodeView,
    managed: Callable[[str], bool],
) -> dict[str, int]:
    """Rank of each SAGA-managed waiting request in the admission policy's order.

    The fairness policy prices every call, the admission policy orders them (it may regroup within
    what fairness allows); the policy set guarantees a permutation of the calls it was given.
    """
    views = [
        v
        for v in (table.view(r.request_id) for r in waiting if managed(r.request_id))
        if v is not None
    ]
    if not views:
        return {}
    priorities = {v.call_id: table.priority(v) for v in views}
    order = table.policy_set.admission_order(table.ctx, node, views, priorities)
    return {call_id: i for i, call_id in enumerate(order)}


def victim_ranks(
    table: PriorityTable,
    running: Sequence[Request],
    user_priority: Callable[[Request], int],
    managed: Callable[[str], bool],
) -> dict[str, int] | None:
    """Dense ranks for running requests, or None when no running request is SAGA's.

    Base: vLLM's victim order ``(priority, arrival_time)``, ties going to the request admitted
    last (``running`` is in admission order), as every SAGA host breaks them; the slots of SAGA's
    calls are refilled by (user priority, fairness priority, arrival, admission), so with these
    ranks installed as priorities vLLM preempts the call the fairness policy values least, and
    never reorders plain requests among themselves.
    """
    admitted = {r.request_id: i for i, r in enumerate(running)}
    base = sorted(running, key=lambda r: (user_priority(r), r.arrival_time,
                                          admitted[r.request_id]))
    ours = [r for r in base if managed(r.request_id)]
    if not ours:
        return None

    def fairness_key(r: Request) -> tuple[int, float, float, int]:
        view = table.view(r.request_id)
        fairness = table.priority(view) if view is not None else math.inf
        return (user_priority(r), fairness, r.arrival_time, admitted[r.request_id])

    ours.sort(key=fairness_key)
    refill = iter(ours)
    merged = [next(refill) if managed(r.request_id) else r for r in base]
    return {r.request_id: rank for rank, r in enumerate(merged)}
