"""Small factories for views, for tests of policies and of engines that call them.

Every argument has a neutral default so a test states only what matters to it.
"""

from __future__ import annotations

from plugins.views import CacheEntryView, CallView, NodeView, TenantView, WorkflowView


def make_workflow(
    workflow_id: str = "w1",
    *,
    tenant: str = "t1",
    template: str = "agent",
    state: str = "waiting_tool",
    arrival_s: float = 0.0,
    calls_done: int = 1,
    context_tokens: int = 1000,
    cached_tokens: int = 0,
    home_node: str | None = None,
    tool_name: str | None = None,
    tool_elapsed_s: float = 0.0,
    service_s: float = 0.0,
    isolated_s: float = 1.0,
    elapsed_s: float = 1.0,
) -> WorkflowView:
    return WorkflowView(
        workflow_id=workflow_id,
        tenant=tenant,
        template=template,
        state=state,
        arrival_s=arrival_s,
        calls_done=calls_done,
        context_tokens=context_tokens,
        cached_tokens=cached_tokens,
        home_node=home_node,
        tool_name=tool_name,
        tool_elapsed_s=tool_elapsed_s,
        service_s=service_s,
        isolated_s=isolated_s,
        elapsed_s=elapsed_s,
    )


def make_call(
    call_id: str = "c1",
    *,
    workflow_id: str = "w1",
    tenant: str = "t1",
    template: str = "agent",
    seq: int = 0,
    prompt_tokens: int = 1000,
    cached_tokens: int = 0,
    arrival_s: float = 0.0,
    node_cached_tokens: tuple[tuple[str, int], ...] = (),
) -> CallView:
    return CallView(
        call_id=call_id,
        workflow_id=workflow_id,
        tenant=tenant,
        template=template,
        seq=seq,
        prompt_tokens=prompt_tokens,
        cached_tokens=cached_tokens,
        arrival_s=arrival_s,
        node_cached_tokens=node_cached_tokens,
    )


def make_node(
    node_id: str = "n1",
    *,
    waiting: int = 0,
    running: int = 0,
    kv_free_tokens: int = 100_000,
    kv_total_tokens: int = 100_000,
    queue_delay_s: float = 0.0,
    load: float = 0.0,
    cached_workflows: tuple[str, ...] = (),
) -> NodeView:
    return NodeView(
        node_id=node_id,
        waiting=waiting,
        running=running,
        kv_free_tokens=kv_free_tokens,
        kv_total_tokens=kv_total_tokens,
        queue_delay_s=queue_delay_s,
        load=load,
        cached_workflows=cached_workflows,
    )


def make_entry(
    entry_id: int,
    *,
    workflow_id: str | None = "w1",
    tenant: str | None = "t1",
    tokens: int = 64,
    blocks: int = 4,
    depth_tokens: int = 0,
    last_access_s: float = 0.0,
    pinned: bool = False,
    next_use_s: float | None = None,
    node_id: str | None = None,
) -> CacheEntryView:
    return CacheEntryView(
        entry_id=entry_id,
        workflow_id=workflow_id,
        tenant=tenant,
        tokens=tokens,
        blocks=blocks,
        depth_tokens=depth_tokens,
        last_access_s=last_access_s,
        pinned=pinned,
        next_use_s=next_use_s,
        node_id=node_id,
    )


def make_tenant(name: str = "t1", *, weight: float = 1.0, slo_slowdown: float = 5.0) -> TenantView:
    return TenantView(name=name, weight=weight, slo_slowdown=slo_slowdown, slo_percentile=99.0)
