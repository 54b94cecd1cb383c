"""Live SLO accounting on a real cluster (control plane, two simulated nodes, PostgreSQL, Redis,
a Celery worker): a demo agent's workflow gets its slowdown from the same isolated-time function
as ``saga bench``, and an idle workflow is reaped, frees its tenant's slot and its node hears
``workflow_end`` with outcome ``abandoned``."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx
import openai
import pytest
from celery.contrib.testing.worker import start_worker

from controlplane.celery import app as celery_app
from controlplane.workflows.models import AgentTemplate, CallOutcome, SloStatus, Workflow
from controlplane.workflows.states import WorkflowState
from controlplane.workflows.tasks import reap_idle_workflows
from nodeagent.agent.control import ControlPlaneLink
from nodeagent.demo_agents import DemoLoad, drive
from nodeagent.sim.costmodel import CostModel
from nodeagent.sim.prepared import prepare
from nodeagent.workloads.model import ROOT, CallSpec, ContextTree, WorkflowSpec, Workload
from nodeagent.workloads.synthetic import generate
from tests.gateway.conftest import tenant_key
from tests.live import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
MODEL = "llama-3-8b"
PROFILE = "h100-llama3-8b"  # what tests.live.NodeProcess runs


def run_demo_agent(url: str, key: str, spec: WorkflowSpec) -> None:
    async def main() -> None:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        async with httpx.AsyncClient(base_url=url, timeout=30,
                                     headers={"Authorization": f"Bearer {key}"}) as http:
            await drive(client, http, spec, MODEL, DemoLoad(context_scale=0.05, max_gap_s=0.3,
                                                            max_calls=5), random.Random(1))
        await client.close()

    asyncio.run(main())


def bench_isolated_tct(calls: list[Any], gaps: list[float]) -> float:
    """The bench's isolated TCT of the recorded calls: each prompt re-sends the previous one and
    its output (what the demo agent does), laid out as a bench workload and prepared by
    ``nodeagent.sim.prepared.prepare`` exactly as ``saga bench`` prepares a trace."""
    tree = ContextTree()
    specs = []
    out = ROOT
    for i, call in enumerate(calls):
        previous_end = 0 if i == 0 else calls[i - 1].prompt_tokens + calls[i - 1].output_tokens
        seg = tree.add(out, call.prompt_tokens - previous_end, "wf")
        out = tree.add(seg, call.output_tokens, "wf")
        specs.append(CallSpec(seg, call.prompt_tokens, call.output_tokens, "tool",
                              gaps[i] if i < len(calls) - 1 else 0.0, out))
    workload = Workload("live", "recorded", tree,
                        [WorkflowSpec("wf", "default", "swe-agent", 0.0, tuple(specs))], {})
    return prepare(workload, CostModel(PROFILE)).isolated_tct_s["wf"]


def test_a_demo_workflows_slowdown_is_the_bench_function_of_its_calls(
        cluster: dict[str, Any]) -> None:
    tenant, key = tenant_key("acme", slo_slowdown=2.0)
    spec = generate("swe", 1, seed=4).workflows[0]
    spec = WorkflowSpec("live-slo-1", "acme", spec.template, 0.0, spec.calls)
    run_demo_agent(cluster["url"], key, spec)

    workflow = Workflow.objects.get(tenant=tenant, external_id="live-slo-1")
    assert workflow.state == WorkflowState.COMPLETED
    assert workflow.est_isolated_s and workflow.tct_s and workflow.slowdown
    assert workflow.slo_status in (SloStatus.MET, SloStatus.MISSED)
    assert workflow.slo_met is (workflow.slowdown <= 2.0)
    assert workflow.isolated_basis == f"profile {PROFILE}"

    calls = list(workflow.calls.order_by("seq"))
    assert len(calls) >= 3 and all(c.outcome == CallOutcome.COMPLETED for c in calls)
    gaps = [(b.queued_at - a.finished_at).total_seconds() for a, b in zip(calls, calls[1:],
                                                                           strict=False)]
    head = max((calls[0].queued_at - workflow.submitted_at).total_seconds(), 0.0)
    tail = (workflow.finished_at - calls[-1].finished_at).total_seconds()
    assert workflow.est_isolated_s == pytest.approx(
        head + bench_isolated_tct(calls, gaps) + tail, rel=1e-9)
    assert workflow.tct_s / workflow.est_isolated_s == pytest.approx(workflow.slowdown)
    # The reused prefix reconstructed from token counts is what the idle node really served
    # (one workflow alone on the cluster: its own previous context, within a KV block).
    from controlplane.slo.isolated import reused_tokens

    for previous, call in zip(calls, calls[1:], strict=False):
        if call.node_id == previous.node_id:
            assert abs(reused_tokens(previous, call, 16) - call.cached_tokens) <= 16


def test_an_idle_workflow_is_reaped_frees_its_slot_and_its_node_hears_abandoned(
        cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    received: list[tuple[str, str, str]] = []
    original = ControlPlaneLink._boundary

    def recording(self: ControlPlaneLink, frame: Any) -> None:
        received.append((frame.event, frame.workflow_id, frame.outcome))
        original(self, frame)

    monkeypatch.setattr(ControlPlaneLink, "_boundary", recording)
    tenant, key = tenant_key("solo", max_concurrent_workflows=1)
    AgentTemplate.objects.create(name="short-lived", idle_timeout_s=2)
    client = openai.OpenAI(base_url=f"{cluster['url']}/v1", api_key=key, max_retries=0)

    def call(workflow_id: str) -> Any:
        return client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello " * 40}], max_tokens=4,
            extra_headers={"X-Saga-Workflow": workflow_id, "X-Saga-Template": "short-lived"})

    call("left-behind")  # one call, and the agent never completes it
    with pytest.raises(openai.RateLimitError) as refused:
        call("next-task")
    retry_after = int(refused.value.response.headers["Retry-After"])
    assert 1 <= retry_after <= 2  # when the idle one will be reaped, not a fixed 30 s

    time.sleep(2.2)
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        reaped = reap_idle_workflows.delay().get(timeout=20)
    left = Workflow.objects.get(tenant=tenant, external_id="left-behind")
    assert reaped == [left.pk]
    assert left.state == WorkflowState.ABANDONED
    assert left.slo_status == SloStatus.MISSED and left.slo_met is False
    wait_for(lambda: ("workflow_end", str(left.pk), "abandoned") in received,
             "workflow_end (abandoned) to reach the home node")
    home = next(n for n in cluster["nodes"] if n.name == left.home_node.name)
    assert str(left.pk) not in home.engine.tracker.workflows

    assert call("next-task").choices[0].finish_reason  # the slot is free again
    from controlplane.slo.models import QuotaRejection

    assert sum(QuotaRejection.objects.filter(tenant=tenant).values_list("count", flat=True)) == 1
