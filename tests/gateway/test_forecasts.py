"""Gateway routing forecasts with the learned execution graphs (not the neutral forecast)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from controlplane.gateway import runtime
from controlplane.gateway.forecasts import ViewForecasts
from plugins.aeg import AEGRegistry
from plugins.views import CallView, NodeView, SchedulingContext, WorkflowEvent, WorkflowView
from tests.gateway.conftest import tenant_key

pytestmark = pytest.mark.django_db(transaction=True)


def learned(template: str, output_tokens: int) -> dict[str, Any]:
    reg = AEGRegistry()
    for i in range(40):
        wf = f"w{i}"
        for kind, t, kw in (("call_start", 0, {"prompt_tokens": 1000}),
                            ("call_end", 1, {"output_tokens": output_tokens}),
                            ("tool_start", 1, {"tool_name": "bash"}),
                            ("tool_end", 6, {"tool_name": "bash"}),
                            ("call_start", 6, {"prompt_tokens": 3000}),
                            ("call_end", 7, {"output_tokens": output_tokens}),
                            ("workflow_end", 7, {})):
            reg.observe(WorkflowEvent(kind=kind, workflow_id=wf, tenant="t", template=template,
                                      time_s=t, **kw))  # type: ignore[arg-type]
    return reg.to_json(template)


def view(state: str, tool: str | None = None) -> WorkflowView:
    return WorkflowView("w", "t", "swe", state, 0.0, 1, 2000, 0, "n", tool, 3.0, 0.0, 1.0, 3.0)


def test_forecasts_come_from_the_templates_learned_graph() -> None:
    aeg = AEGRegistry()
    aeg.load(learned("swe", 900))
    forecasts = ViewForecasts(aeg, {"w": view("queued")})
    first = forecasts.predict("w")
    assert first.expected_output_tokens == pytest.approx(900, rel=0.15)
    assert first.growth_tokens_per_call > 0
    in_tool = ViewForecasts(aeg, {"w": view("waiting_tool", "bash")}).predict("w")
    assert 0 < in_tool.expected_gap_s < 10  # bash takes ~5 s here, 3 s of it already spent
    assert ViewForecasts(aeg, {}).predict("nope").p_next_call == 1.0


def test_routing_a_call_sees_the_learned_forecast(cluster: dict[str, Any]) -> None:
    from plugins.hookspecs import ROUTING, hookimpl
    from plugins.policies.routing import RequestLevelRouting

    seen: list[float] = []

    class Spy(RequestLevelRouting):
        name = "forecast-spy"
        kind = ROUTING

        @hookimpl
        def saga_route_call(self, ctx: SchedulingContext, call: CallView,
                            workflow: WorkflowView, nodes: Sequence[NodeView]) -> str:
            seen.append(ctx.predict(workflow.workflow_id).expected_output_tokens)
            return nodes[0].node_id

    manager = runtime.directory.manager
    if ("routing", "forecast-spy") not in manager.registry:
        manager.registry.add(Spy)
    before = manager.active()["routing"]
    manager.aeg.load(learned("swe-agent", 1500))
    manager.activate("routing", "forecast-spy")
    try:
        _tenant, key = tenant_key("acme")
        reply = httpx.post(f"{cluster['url']}/v1/chat/completions", timeout=10, json={
            "model": "llama-3-8b", "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]},
            headers={"Authorization": f"Bearer {key}", "X-Saga-Template": "swe-agent"})
        assert reply.status_code == 200
    finally:
        manager.activate("routing", before.name, before.params.model_dump())
    assert seen and seen[0] == pytest.approx(1500, rel=0.15)  # not the neutral 0
