"""What the console's pages show, as JSON-safe dicts: one builder per thing, used both by the
page that renders it first and by the consumer that sends it again when it changes, so a live
update and a reload always show the same."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from controlplane.nodes.models import Node, NodePolicyState
from controlplane.policies.models import GATEWAY_KINDS, PolicyActivation, RolloutStatus
from controlplane.workflows.models import AgentTemplate, Workflow
from controlplane.workflows.states import TERMINAL_STATES, WorkflowState
from plugins.hookspecs import KINDS, NODE_KINDS


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# ------------------------------------------------------------------------------------ nodes

def policy_kinds() -> list[str]:
    """The policy kinds the plugin layer defines (never a list of our own)."""
    return list(KINDS)


def node_policy_kinds() -> list[str]:
    """The kinds a node runs (routing is the gateway's, so a node never answers for it)."""
    return list(NODE_KINDS)


def node_load(node: Node) -> dict[str, Any]:
    """The figures of the node's last heartbeat the cluster page shows (the API's
    ``last_load``, with KV use as a fraction)."""
    load = node.last_load or {}
    total = int(load.get("kv_total_tokens") or node.kv_capacity_tokens or 0)
    used = int(load.get("kv_used_tokens") or 0)
    return {
        "kv_used_tokens": used, "kv_total_tokens": total,
        "kv_use": used / total if total else None,
        "prefix_cache_hit_rate": load.get("prefix_cache_hit_rate"),
        "queue_delay_s": load.get("queue_delay_s"),
        "running": load.get("running"), "waiting": load.get("waiting"),
        "load": load.get("load"),
        "cached_workflows": len(load.get("cached_workflows") or {}),
    }


def node_row(node: Node, policies: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": node.name, "status": node.status, "engine": node.engine,
        "model": node.model_name, "gpu_model": node.gpu_model, "gpu_count": node.gpu_count,
        "profile": node.profile, "address": node.address, "drained": node.drained_at is not None,
        "last_heartbeat_at": iso(node.last_heartbeat_at), **node_load(node),
        "history": list(node.load_history or []), "policies": policies,
    }


def node_policies(nodes: list[Node]) -> dict[int, dict[str, dict[str, Any]]]:
    """node id -> kind -> what the node runs and its latest answer (pending, refused...)."""
    from controlplane.policies.rollout import running_activations

    ids = [n.pk for n in nodes]
    out: dict[int, dict[str, dict[str, Any]]] = {pk: {} for pk in ids}
    for kind in node_policy_kinds():
        runs = running_activations(kind, ids)
        for pk, run in runs.items():
            out[pk][kind] = {"runs": run, "answer": None}
    for state in (NodePolicyState.objects.filter(node_id__in=ids)
                  .select_related("activation__policy")):
        entry = out[state.node_id].setdefault(state.kind, {"runs": None, "answer": None})
        activation = state.activation
        entry["answer"] = {
            "status": state.status, "error": state.error,
            "activation_id": state.activation_id,
            "name": activation.policy.plugin_name if activation else None,
            "version": activation.policy.version if activation else None,
        }
    return out


def cluster_nodes() -> list[dict[str, Any]]:
    nodes = list(Node.objects.order_by("name"))
    policies = node_policies(nodes)
    return [node_row(n, policies[n.pk]) for n in nodes]


# ------------------------------------------------------------------------------- workflows

def workflow_rows(rows: QuerySet[Workflow], limit: int = 100) -> list[dict[str, Any]]:
    page = (rows.select_related("tenant", "template", "home_node")
            .annotate(n_calls=Count("calls", distinct=True),
                      n_tools=Count("tool_calls", distinct=True))
            .order_by("-submitted_at", "-id")[:limit])
    return [{
        "id": w.pk, "tenant": w.tenant.slug, "template": w.template.name,
        "external_id": w.external_id, "state": w.state,
        "home_node": w.home_node.name if w.home_node else None,
        "submitted_at": iso(w.submitted_at), "finished_at": iso(w.finished_at),
        "calls": w.n_calls, "tool_calls": w.n_tools, "tct_s": w.tct_s,
        "slowdown": finite(w.slowdown), "slo_status": w.slo_status,
    } for w in page]


def filter_workflows(params: dict[str, str]) -> QuerySet[Workflow]:
    """The workflow list's filters (tenant, state, template, node, submitted after/before),
    from a query string's values; unknown or empty values filter nothing."""
    rows = Workflow.objects.all()
    if params.get("tenant"):
        rows = rows.filter(tenant__slug=params["tenant"])
    if params.get("state") in WorkflowState.values:
        rows = rows.filter(state=params["state"])
    if params.get("template"):
        rows = rows.filter(template__name=params["template"])
    if params.get("node"):
        rows = rows.filter(Q(home_node__name=params["node"]) | Q(calls__node__name=params["node"])
                           ).distinct()
    for key, lookup in (("after", "submitted_at__gte"), ("before", "submitted_at__lt")):
        moment = parse_moment(params.get(key, ""))
        if moment is not None:
            rows = rows.filter(**{lookup: moment})
    return rows


def parse_moment(text: str) -> datetime | None:
    """A ``datetime-local`` input's value (UTC, as the page says) or an ISO date-time."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=UTC)
    return moment


def workflow_detail(workflow_id: int) -> dict[str, Any] | None:
    """The workflow, its calls and tool calls (as ``GET /api/workflows/{id}/calls`` returns
    them, with the derived times the graph shows) and the execution graph's forecast."""
    from controlplane.api.workflows import timeline

    workflow = (Workflow.objects.select_related("tenant", "template", "home_node")
                .filter(pk=workflow_id).first())
    if workflow is None:
        return None
    data = timeline(workflow).model_dump(mode="json")
    calls = list(workflow.calls.order_by("seq"))
    for out, call in zip(data["calls"], calls, strict=True):
        out.update(new_prompt_tokens=call.prompt_tokens - call.cached_tokens,
                   queue_s=_between(call.queued_at, call.started_at),
                   to_first_token_s=_between(call.started_at, call.first_token_at),
                   decode_s=_between(call.first_token_at, call.finished_at))
    return {
        "workflow": {
            "id": workflow.pk, "tenant": workflow.tenant.slug,
            "template": workflow.template.name, "external_id": workflow.external_id,
            "state": workflow.state,
            "home_node": workflow.home_node.name if workflow.home_node else None,
            "submitted_at": iso(workflow.submitted_at), "started_at": iso(workflow.started_at),
            "finished_at": iso(workflow.finished_at), "tct_s": workflow.tct_s,
            "est_isolated_s": workflow.est_isolated_s, "slowdown": finite(workflow.slowdown),
            "slo_status": workflow.slo_status, "isolated_basis": workflow.isolated_basis,
            "slo_slowdown": workflow.tenant.slo_slowdown, "slo": workflow.tenant.slo_label,
            "recompute_tokens": workflow.recompute_tokens,
        },
        "calls": data["calls"],
        "tool_calls": data["tool_calls"],
        "forecast": forecast(workflow, calls),
    }


def _between(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start is not None and end is not None else None


def forecast(workflow: Workflow, calls: list[Any]) -> dict[str, Any] | None:
    """The template's learned graph's forecast for the workflow's next step, and what the
    eviction policy in force decides about keeping its cache (None once it has ended).

    Computed here from the control plane's records, with the same graph and policy code the
    nodes run; the home node decides with its own view (what it has cached, its clock), so its
    decision may differ slightly."""
    if workflow.state in TERMINAL_STATES:
        return None
    from plugins.aeg import TOOL_PREFIX, AEGRegistry

    now = timezone.now()
    aeg = AEGRegistry()
    if workflow.template.aeg_stats:
        aeg.load(workflow.template.aeg_stats)
    graph = aeg.graph(workflow.template.name)
    last = calls[-1] if calls else None
    context = (last.prompt_tokens + last.output_tokens) if last is not None else 0
    tool = (workflow.tool_calls.filter(ended_at__isnull=True).order_by("-started_at").first()
            if workflow.state == WorkflowState.WAITING_TOOL else None)
    if workflow.state == WorkflowState.SUBMITTED:
        state, elapsed = "new", 0.0
    elif workflow.state == WorkflowState.WAITING_TOOL:
        state = "tool" if tool is not None else "after_call"
        since = tool.started_at if tool is not None else (last.finished_at if last else now)
        elapsed = max((now - (since or now)).total_seconds(), 0.0)
    else:
        state, elapsed = "call", 0.0
    tool_name = tool.name if tool is not None else None
    prediction = aeg.forecast(workflow.template.name, state, context_tokens=context,
                              elapsed_s=elapsed, tool=tool_name)
    out: dict[str, Any] = {
        "state": state, "tool": tool_name, "elapsed_s": elapsed,
        "p_next_call": prediction.p_next_call, "expected_gap_s": prediction.expected_gap_s,
        "reuse_tokens": prediction.reuse_tokens,
        "expected_remaining_calls": prediction.expected_remaining_calls,
        "workflows_learned": graph.workflows_seen,
    }
    if tool_name is not None:
        fit = graph.tool_fit(tool_name)
        out["tool_duration"] = {"predicted_total_s": elapsed + fit.mean_residual(elapsed),
                                "median_s": fit.median, "learned": tool_name in graph.tools}
        out["p_next_call_after_tool"] = graph.p_call_after(TOOL_PREFIX + tool_name)
    out["retention"] = retention_decision(workflow, state, tool_name, context, elapsed, aeg)
    return out


def retention_decision(workflow: Workflow, state: str, tool: str | None, context: int,
                       elapsed: float, aeg: Any) -> dict[str, Any]:
    """What the eviction policy in force answers ``saga_tool_retention_s`` for this workflow at
    its (current, or next) tool start: seconds its cache stays pinned, 0 for not at all."""
    import time

    from controlplane.gateway.forecasts import ViewForecasts
    from controlplane.policies.catalogue import registry
    from plugins.views import StaticContext, workflow_view

    activation = PolicyActivation.objects.active("eviction")
    if activation is None:
        return {"policy": None, "seconds": None, "note": "no eviction policy is active"}
    policy = activation.policy
    label = f"{policy.plugin_name} v{policy.version}"
    try:
        cls = registry().get("eviction", policy.plugin_name)
        instance = cls(cls.validate_params(policy.params))
        now = time.time()
        key = str(workflow.pk)
        view = workflow_view(
            workflow_id=key, tenant=workflow.tenant.slug, template=workflow.template.name,
            state="waiting_tool", now_s=now, arrival_s=workflow.submitted_at.timestamp(),
            calls_done=workflow.calls.count(), context_tokens=context, cached_tokens=0,
            home_node=workflow.home_node.name if workflow.home_node else None, tool_name=tool,
            gap_since_s=now - elapsed if state == "tool" else now, service_s=0.0,
            isolated_done_s=workflow.est_isolated_s or 0.0, isolated_current_s=0.0)
        views = {key: view}
        ctx = StaticContext(now_s=now, workflows=views, predictor=ViewForecasts(aeg, views))
        seconds = float(instance.saga_tool_retention_s(ctx, view))
    except Exception as exc:  # a policy that raises is reported, as nodes report it
        return {"policy": label, "seconds": None,
                "note": f"the policy raised {type(exc).__name__}: {exc}"}
    when = "at this tool start" if state == "tool" else "at its next tool start"
    return {"policy": label, "seconds": seconds, "when": when}


# ------------------------------------------------------------------------ agent templates

def aeg_graph(template: AgentTemplate) -> dict[str, Any]:
    """The learned Agent Execution Graph as states and edges: transition probabilities (prior
    pseudo-counts included, as the policies use them), observed counts, and each state's
    duration distribution (log-normal fits: median, p90, weight)."""
    from plugins.aeg import ANY_TOOL, CALL, END, TOOL_PREFIX, Z90, AgentExecutionGraph

    stats = template.aeg_stats
    graph = (AgentExecutionGraph.from_dict(stats) if stats
             else AgentExecutionGraph(template.name))

    def fit_summary(fit: Any) -> dict[str, float]:
        return {"median": fit.median, "p90": fit.quantile(Z90), "mean": fit.mean,
                "mu": fit.mu, "sigma": fit.sigma, "weight": fit.n}

    tools = sorted({s[len(TOOL_PREFIX):] for s in graph.counts if s.startswith(TOOL_PREFIX)}
                   | set(graph.tools))
    states = [CALL, *(TOOL_PREFIX + t for t in tools)]
    nodes: list[dict[str, Any]] = [
        {"id": CALL, "kind": "call", "label": "LLM call",
         "output_tokens": fit_summary(graph.output)},
    ]
    for tool in tools:
        nodes.append({"id": TOOL_PREFIX + tool, "kind": "tool", "label": tool,
                      "duration_s": fit_summary(graph.tool_fit(tool))})
    edges: list[dict[str, Any]] = []
    seen_any_tool = False
    for source in states:
        observed = graph.counts.get(source, {})
        for target, p in sorted(graph.transition_probabilities(source).items()):
            if p <= 0:
                continue
            seen_any_tool |= target == ANY_TOOL
            edges.append({"source": source, "target": target, "p": p,
                          "observed": observed.get(target, 0.0)})
    nodes.append({"id": END, "kind": "end", "label": "end"})
    if seen_any_tool:
        nodes.append({"id": ANY_TOOL, "kind": "prior", "label": "a tool not seen yet",
                      "duration_s": fit_summary(graph.pooled_tool)})
        for target, p in sorted(graph.transition_probabilities(ANY_TOOL).items()):
            edges.append({"source": ANY_TOOL, "target": target, "p": p, "observed": 0.0})
    return {
        "template": template.name, "workflows_seen": graph.workflows_seen,
        "updated_at": iso(template.aeg_updated_at), "learned": bool(stats),
        "nodes": nodes, "edges": edges,
        "think_s": fit_summary(graph.think),
        "reuse_fraction": graph.reuse.mean, "growth_tokens_per_call": graph.growth.mean,
        "post_tool_delay_s": graph.post_tool.mean,
    }


# ------------------------------------------------------------------------------- policies

def params_text(params: dict[str, Any]) -> str:
    import json

    return ", ".join(f"{k}={json.dumps(v)}" for k, v in params.items()) or "no parameters"


def activation_data(activation: PolicyActivation) -> dict[str, Any]:
    policy = activation.policy
    return {
        "id": activation.pk, "kind": activation.kind, "name": policy.plugin_name,
        "version": policy.version, "params": policy.params,
        "params_text": params_text(policy.params), "rollout": activation.rollout,
        "activated_display": activation.activated_at.strftime("%Y-%m-%d %H:%M:%S"),
        "is_rollback": activation.is_rollback, "actor": activation.actor,
        "reason": activation.reason, "activated_at": iso(activation.activated_at),
        "previous_id": activation.previous_id,
    }


def rollout_payload(activation_id: int) -> dict[str, Any] | None:
    """One activation's rollout: its status, each node's answer and what the node runs now,
    and the activation in force for its kind (which a failed one is not)."""
    from controlplane.policies.rollout import node_answers

    activation = (PolicyActivation.objects.select_related("policy")
                  .filter(pk=activation_id).first())
    if activation is None:
        return None
    in_force = PolicyActivation.objects.active(activation.kind)
    answers = node_answers(activation)
    for answer in answers:
        answer["updated_at"] = iso(answer["updated_at"])
    return {**activation_data(activation), "nodes": answers,
            "tier": "gateway" if activation.kind in GATEWAY_KINDS else "nodes",
            "in_force_id": in_force.pk if in_force else None,
            "failed": activation.rollout == RolloutStatus.FAILED}
