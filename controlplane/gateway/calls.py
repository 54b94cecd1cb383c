"""Starting and finishing a gateway call: workflow resolution, tool boundaries, routing and the
Call record. Both functions are synchronous (ORM, Redis) and run in one thread hop each, so a
call costs two hops whatever it does.

Every call that ``begin_call`` records is ``pending`` and held by this gateway process (its
``gateway`` column and a lease in the routing state) until ``finish_call`` records exactly one
terminal outcome. What ends a call another way (this process dies) is closed by the reconciler
(``controlplane.gateway.reconcile``), so no call stays pending for ever.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from datetime import datetime

from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from controlplane import quotas, stores
from controlplane.gateway.directory import ClusterDirectory, NodeEntry
from controlplane.gateway.forecasts import ViewForecasts
from controlplane.gateway.keys import Caller
from controlplane.gateway.routing_state import RoutingState
from controlplane.gateway.workflow_views import routing_view
from controlplane.slo.isolated import call_isolated_s
from controlplane.stores import StoreUnavailable
from controlplane.tenants.models import Tenant
from controlplane.workflows import services
from controlplane.workflows.models import Call, CallOutcome, Workflow
from controlplane.workflows.states import TERMINAL_STATES, WorkflowState
from nodeagent.openai_api import OpenAIError
from plugins.views import CallView, NodeView, StaticContext

STORE_DOWN = (OperationalError, InterfaceError)
"""PostgreSQL errors that mean the store is unreachable (a retryable 503, the breaker opens);
any other database error is a bug or bad input, never an outage."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Which workflow a request belongs to, as the agent said (or None: a single call)."""

    external_id: str | None
    template: str


@dataclass(slots=True)
class Ticket:
    """One call in flight through the gateway."""

    call_pk: int
    workflow_pk: int
    tenant: str
    tenant_id: int
    template: str
    node: NodeEntry
    single_call: bool
    prompt_tokens: int
    dispatched: float = field(default_factory=time.monotonic)
    queued_at: datetime | None = None
    """When the call arrived (its record's ``queued_at``): its wall time ends at its finish."""

    @property
    def lease(self) -> tuple[str, str]:
        return self.node.name, str(self.call_pk)


def begin_call(caller: Caller, identity: Identity, model: str, prompt_tokens: int,
               directory: ClusterDirectory, state: RoutingState, gateway: str) -> Ticket:
    """Admit, record and route a call; raises OpenAIError (4xx/429/503) with nothing left
    pending, or StoreUnavailable when PostgreSQL or Redis does not answer."""
    stores.postgres.check()
    try:
        return _begin(caller, identity, model, prompt_tokens, directory, state, gateway)
    except STORE_DOWN as exc:
        stores.postgres.failed(exc)
        raise StoreUnavailable(f"PostgreSQL: {exc}") from exc


def _begin(caller: Caller, identity: Identity, model: str, prompt_tokens: int,
           directory: ClusterDirectory, state: RoutingState, gateway: str) -> Ticket:
    arrived = timezone.now()  # queued_at: started_at - queued_at is the gateway's admission time
    quotas.check_tokens(caller.tenant_id, caller.tokens_per_minute)
    directory.refresh()
    candidates = directory.nodes_for(model)
    if not candidates:
        if model not in directory.models():
            raise OpenAIError(404, f"model {model!r} is not served by any node that is up; "
                              f"served: {', '.join(directory.models()) or 'none'}", "model",
                              code="model_not_found")
        raise OpenAIError(503, "no node is up for this model", None, "server_error",
                          "no_nodes")
    workflow_pk = _admit_workflow(caller, identity)
    with transaction.atomic():
        workflow = _locked_workflows().get(pk=workflow_pk)
        if workflow.state in TERMINAL_STATES:
            raise OpenAIError(409, f"workflow {identity.external_id!r} is {workflow.state}; "
                              "use a new X-Saga-Workflow id", "X-Saga-Workflow",
                              code="workflow_finished")
        services.call_arrived(workflow)
        seq = workflow.calls.count()
        wf_key = str(workflow.pk)
        node = _route(workflow, wf_key, seq, prompt_tokens, candidates, directory, state)
        call = Call.objects.create(workflow=workflow, seq=seq, prompt_tokens=prompt_tokens,
                                   node_id=node.pk, queued_at=arrived,
                                   started_at=timezone.now(), gateway=gateway)
        if workflow.home_node_id != node.pk:
            services.set_home(workflow, node.pk)
    ticket = Ticket(call.pk, workflow.pk, caller.tenant, caller.tenant_id,
                    workflow.template.name, node, identity.external_id is None, prompt_tokens,
                    queued_at=arrived)
    try:
        state.acquire(node.name, str(call.pk), prompt_tokens)
    except StoreUnavailable as exc:
        finish_call(ticket, Outcome(CallOutcome.FAILED, error=f"not dispatched: {exc}"), state)
        raise
    return ticket


def _locked_workflows() -> QuerySet[Workflow]:
    """Workflows with tenant and template joined, locking the workflow row only: a plain
    select_for_update would lock the joined tenant and template rows too and serialise every call
    of a tenant (and of a template) on them. Admission locks the tenant itself when it needs to
    (services.create_workflow)."""
    return (Workflow.objects.select_for_update(of=("self",))
            .select_related("template", "tenant", "home_node"))


def _admit_workflow(caller: Caller, identity: Identity) -> int:
    """The workflow's id, admitting (creating) it first when it is new, in a transaction of its
    own: a tenant's quota lock is then held for the admission only, not for the whole call."""
    tenant = Tenant(pk=caller.tenant_id, slug=caller.tenant)
    if identity.external_id is None:
        return services.create_workflow(tenant, identity.template, validate=False).pk
    existing = (Workflow.objects.filter(tenant_id=caller.tenant_id,
                                        external_id=identity.external_id)
                .values_list("pk", flat=True).first())
    if existing is not None:
        return existing
    try:
        return services.create_workflow(tenant, identity.template,
                                        external_id=identity.external_id, validate=False).pk
    except IntegrityError:  # its first two calls raced: the other one created it
        return Workflow.objects.values_list("pk", flat=True).get(
            tenant_id=caller.tenant_id, external_id=identity.external_id)


def placed_view(entry: NodeEntry, calls: int, prompt_tokens: int) -> NodeView:
    """A node's heartbeat view, corrected by what the gateway tier has in flight there now.

    Heartbeats lag by up to an interval, so a burst of new workflows would all see the same idle
    node. The calls this tier has in flight on a node are at least running or queued there, and
    their prompts at least occupy its KV: ``running`` counts them, and ``load`` (the contract's
    saturation: KV demand over capacity, or calls over batch slots) and free KV account for
    them, so a placement is visible to the very next routing decision, as in the simulator.
    """
    view = entry.view
    total = max(view.kv_total_tokens, 1)
    running = max(view.running, calls - view.waiting)
    slots = (running + view.waiting) / entry.max_num_seqs if entry.max_num_seqs else 0.0
    return replace(view, running=running,
                   load=max(view.load, prompt_tokens / total, slots),
                   kv_free_tokens=max(0, min(view.kv_free_tokens, total - prompt_tokens)))


def _route(workflow: Workflow, wf_key: str, seq: int, prompt_tokens: int,
           candidates: list[NodeEntry], directory: ClusterDirectory,
           state: RoutingState) -> NodeEntry:
    inflight = state.inflight([n.name for n in candidates])
    views = [placed_view(n, inflight[n.name].calls, inflight[n.name].prompt_tokens)
             for n in candidates]
    home = workflow.home_node.name if workflow.home_node is not None else None
    home_entry = directory.node(home) if home is not None else None
    view = routing_view(workflow, seq, prompt_tokens, home_entry, home_entry or candidates[0],
                        directory)
    now = view.arrival_s + view.elapsed_s
    # What each node reported cached of the workflow's own context (heartbeats): the gateway
    # sees no prompt hashes, so a prefix other workflows share is not counted here.
    node_cached = tuple((n.name, n.cached_workflows.get(wf_key, 0)) for n in candidates)
    call = CallView(call_id=f"{wf_key}#{seq}", workflow_id=wf_key, tenant=view.tenant,
                    template=view.template, seq=seq, prompt_tokens=prompt_tokens,
                    cached_tokens=min(view.cached_tokens, max(prompt_tokens - 1, 0)),
                    arrival_s=now, node_cached_tokens=node_cached)
    workflows = {wf_key: view}
    ctx = StaticContext(now_s=now, tenants=directory.tenants,
                        nodes={v.node_id: v for v in views}, workflows=workflows,
                        predictor=ViewForecasts(directory.manager.aeg, workflows))
    chosen = directory.policies().route_call(ctx, call, view, views)
    entry = directory.node(chosen)
    assert entry is not None
    return entry


@dataclass(slots=True)
class Outcome:
    outcome: str
    finish_reason: str = ""
    prompt_tokens: int | None = None
    cached_tokens: int = 0
    completion_tokens: int = 0
    tool_names: tuple[str, ...] = ()
    first_token_at: datetime | None = None
    error: str = ""
    service_s: float | None = None


def release_lease(ticket: Ticket, state: RoutingState) -> None:
    """Take the call out of its node's in-flight count now. If Redis does not answer, the
    lease (no longer renewed) expires by itself within ``LEASE_TTL_S``."""
    with contextlib.suppress(StoreUnavailable):
        state.release(*ticket.lease)


def finish_call(ticket: Ticket, result: Outcome, state: RoutingState) -> bool:
    """Record how the call ended, charge tokens, infer a tool start, close single calls.

    Returns False when the call already had an outcome (nothing recorded twice). Raises
    StoreUnavailable when PostgreSQL does not answer; the caller keeps the outcome and retries.

    The holder's own outcome also replaces an ``interrupted`` that reconciliation presumed while
    this process's liveness lease had lapsed (a Redis outage longer than ``LEASE_TTL_S``): the
    call still has one outcome, and it is the one that happened.
    """
    release_lease(ticket, state)
    prompt = result.prompt_tokens if result.prompt_tokens is not None else ticket.prompt_tokens
    open_outcomes = ((CallOutcome.PENDING,) if result.outcome == CallOutcome.INTERRUPTED
                     else (CallOutcome.PENDING, CallOutcome.INTERRUPTED))
    try:
        return _record(ticket, result, prompt, open_outcomes)
    except STORE_DOWN as exc:
        stores.postgres.failed(exc)
        raise StoreUnavailable(f"PostgreSQL: {exc}") from exc


def _record(ticket: Ticket, result: Outcome, prompt: int, open_outcomes: tuple[str, ...]) -> bool:
    now = timezone.now()
    with transaction.atomic():
        workflow = _locked_workflows().get(pk=ticket.workflow_pk)
        cached = min(result.cached_tokens, prompt)
        isolated = _isolated_s(ticket.node, workflow, prompt, cached, result)
        recorded = Call.objects.filter(pk=ticket.call_pk, outcome__in=open_outcomes).update(
            outcome=result.outcome, finish_reason=result.finish_reason[:32],
            prompt_tokens=prompt, cached_tokens=cached,
            output_tokens=result.completion_tokens, first_token_at=result.first_token_at,
            finished_at=now, error=result.error[:2000], gateway="",
            service_s=result.service_s, isolated_s=isolated,
        )
        if not recorded:
            return False
        services.call_recorded(ticket.workflow_pk)
        _accumulate(workflow, ticket, result, prompt, isolated, now)
        if workflow.state not in TERMINAL_STATES:
            _advance_workflow(workflow, ticket.single_call, result)
    # The call is recorded; a Redis outage only loses this call's tokens-per-minute charge.
    with contextlib.suppress(StoreUnavailable):
        quotas.charge_tokens(ticket.tenant_id, prompt + result.completion_tokens)
    return True


def _isolated_s(node: NodeEntry, workflow: Workflow, prompt: int, cached: int,
                result: Outcome) -> float | None:
    """A completed call's isolated seconds on its node's cost model (None: not completed, or
    the node's cost model is unknown)."""
    if result.outcome != CallOutcome.COMPLETED or node.cost is None:
        return None
    return call_isolated_s(node.cost, node.block_size, workflow.context_tokens, prompt, cached,
                           result.completion_tokens)


def _accumulate(workflow: Workflow, ticket: Ticket, result: Outcome, prompt: int,
                isolated: float | None, now: datetime) -> None:
    """Keep the row's routing-view accumulators (``workflow_views``) with the call's record."""
    fields = ["calls_wall_s"]
    if ticket.queued_at is not None:
        workflow.calls_wall_s += max((now - ticket.queued_at).total_seconds(), 0.0)
    if result.service_s is not None:
        workflow.service_s += result.service_s
        fields.append("service_s")
    if isolated is not None:
        workflow.calls_isolated_s += isolated
        workflow.context_tokens = prompt + result.completion_tokens
        fields += ["calls_isolated_s", "context_tokens"]
    workflow.save(update_fields=fields)


def _advance_workflow(workflow: Workflow, single_call: bool, result: Outcome) -> None:
    if single_call:
        final = (WorkflowState.COMPLETED if result.outcome == CallOutcome.COMPLETED
                 else WorkflowState.FAILED)
        services.finish_workflow(workflow, final)
    elif (result.outcome == CallOutcome.COMPLETED and result.finish_reason == "tool_calls"
          and workflow.state == WorkflowState.RUNNING):
        name = ",".join(sorted(set(result.tool_names))) or "tool"
        services.start_tool(workflow, name[:200])


def correct_to_cancelled(ticket: Ticket, reason: str) -> bool:
    """A call recorded completed whose response never left this process (the client went away
    in between): its one outcome becomes ``cancelled``. Nothing is charged back."""
    return bool(Call.objects.filter(pk=ticket.call_pk, outcome=CallOutcome.COMPLETED).update(
        outcome=CallOutcome.CANCELLED, error=reason[:2000]))
