"""Starting and finishing a gateway call: workflow resolution, tool boundaries, routing and the
Call record. Both functions are synchronous (ORM, Redis) and run in one thread hop each, so a
call costs two hops whatever it does."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import datetime

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from controlplane import quotas
from controlplane.gateway.directory import ClusterDirectory, NodeEntry
from controlplane.gateway.keys import Caller
from controlplane.gateway.routing_state import RoutingState
from controlplane.tenants.models import Tenant
from controlplane.workflows import services
from controlplane.workflows.models import Call, CallOutcome, Workflow
from controlplane.workflows.states import TERMINAL_STATES, WorkflowState
from nodeagent.openai_api import OpenAIError
from plugins.views import CallView, StaticContext, WorkflowView


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


def begin_call(caller: Caller, identity: Identity, model: str, prompt_tokens: int,
               directory: ClusterDirectory, state: RoutingState) -> Ticket:
    """Admit, record and route a call; raises OpenAIError (4xx/429/503) with nothing recorded."""
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
    with transaction.atomic():
        workflow = _resolve_workflow(caller, identity)
        _enter_call(workflow)
        seq = workflow.calls.count()
        wf_key = str(workflow.pk)
        node = _route(workflow, wf_key, seq, prompt_tokens, candidates, directory, state)
        call = Call.objects.create(workflow=workflow, seq=seq, prompt_tokens=prompt_tokens,
                                   node_id=node.pk, started_at=timezone.now())
        if workflow.home_node_id != node.pk:
            Workflow.objects.filter(pk=workflow.pk).update(home_node_id=node.pk)
    state.add_inflight(node.name, 1)
    return Ticket(call.pk, workflow.pk, caller.tenant, caller.tenant_id, workflow.template.name,
                  node, identity.external_id is None, prompt_tokens)


def _locked_workflows() -> QuerySet[Workflow]:
    """Workflows with tenant and template joined, locking the workflow row only: a plain
    select_for_update would lock the joined tenant and template rows too and serialise every call
    of a tenant (and of a template) on them. Admission locks the tenant itself when it needs to
    (services.create_workflow)."""
    return Workflow.objects.select_for_update(of=("self",)).select_related("template", "tenant")


def _resolve_workflow(caller: Caller, identity: Identity) -> Workflow:
    tenant = Tenant(pk=caller.tenant_id, slug=caller.tenant,
                    max_concurrent_workflows=caller.max_concurrent_workflows)
    if identity.external_id is None:
        return services.create_workflow(tenant, identity.template)
    workflow = (_locked_workflows()
                .filter(tenant_id=caller.tenant_id, external_id=identity.external_id).first())
    if workflow is None:
        workflow = services.create_workflow(tenant, identity.template,
                                            external_id=identity.external_id)
        workflow = _locked_workflows().get(pk=workflow.pk)
    if workflow.state in TERMINAL_STATES:
        raise OpenAIError(409, f"workflow {identity.external_id!r} is {workflow.state}; "
                          "use a new X-Saga-Workflow id", "X-Saga-Workflow",
                          code="workflow_finished")
    return workflow


def _enter_call(workflow: Workflow) -> None:
    """The agent's next call: a tool it was running has ended (inferred), the workflow runs."""
    if workflow.state == WorkflowState.WAITING_TOOL:
        services.end_tool(workflow)
    elif workflow.state == WorkflowState.SUBMITTED:
        workflow.transition_to(WorkflowState.RUNNING)


def _route(workflow: Workflow, wf_key: str, seq: int, prompt_tokens: int,
           candidates: list[NodeEntry], directory: ClusterDirectory,
           state: RoutingState) -> NodeEntry:
    inflight = state.inflight([n.name for n in candidates])
    # Heartbeats lag; calls this gateway tier has in flight are at least running there.
    views = [replace(n.view, running=max(n.view.running, inflight[n.name])) for n in candidates]
    now = time.time()
    home = state.home(wf_key)
    view = WorkflowView(
        workflow_id=wf_key, tenant=workflow.tenant.slug, template=workflow.template.name,
        state="queued", arrival_s=workflow.submitted_at.timestamp(), calls_done=seq,
        context_tokens=prompt_tokens, cached_tokens=0, home_node=home, tool_name=None,
        tool_elapsed_s=0.0, service_s=0.0,
        isolated_s=max(workflow.est_isolated_s or 1.0, 1e-3),
        elapsed_s=now - workflow.submitted_at.timestamp(),
    )
    call = CallView(call_id=f"{wf_key}#{seq}", workflow_id=wf_key, tenant=view.tenant,
                    template=view.template, seq=seq, prompt_tokens=prompt_tokens,
                    cached_tokens=0, arrival_s=now)
    ctx = StaticContext(now_s=now, tenants=directory.tenants,
                        nodes={v.node_id: v for v in views}, workflows={wf_key: view})
    chosen = directory.policies().route_call(ctx, call, view, views)
    if chosen != home:
        state.set_home(wf_key, chosen)
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


def finish_call(ticket: Ticket, result: Outcome, state: RoutingState) -> None:
    """Record how the call ended, charge tokens, infer a tool start, close single calls."""
    state.add_inflight(ticket.node.name, -1)
    prompt = result.prompt_tokens if result.prompt_tokens is not None else ticket.prompt_tokens
    quotas.charge_tokens(ticket.tenant_id, prompt + result.completion_tokens)
    now = timezone.now()
    with transaction.atomic():
        Call.objects.filter(pk=ticket.call_pk, outcome=CallOutcome.PENDING).update(
            outcome=result.outcome, finish_reason=result.finish_reason[:32],
            prompt_tokens=prompt, cached_tokens=min(result.cached_tokens, prompt),
            output_tokens=result.completion_tokens, first_token_at=result.first_token_at,
            finished_at=now, error=result.error[:2000],
        )
        workflow = _locked_workflows().get(pk=ticket.workflow_pk)
        if workflow.state in TERMINAL_STATES:
            return
        if ticket.single_call:
            final = (WorkflowState.COMPLETED if result.outcome == CallOutcome.COMPLETED
                     else WorkflowState.FAILED)
            services.finish_workflow(workflow, final)
        elif (result.outcome == CallOutcome.COMPLETED and result.finish_reason == "tool_calls"
              and workflow.state == WorkflowState.RUNNING):
            name = ",".join(sorted(set(result.tool_names))) or "tool"
            services.start_tool(workflow, name[:200])
