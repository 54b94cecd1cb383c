"""Tool and workflow boundaries are inferred once, by the control plane, and pushed to the
workflow's home node; the node applies what it is told and infers nothing itself."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest
from django.test import Client

from controlplane.workflows.models import Workflow
from nodeagent.agent.control import ControlPlaneLink
from tests.gateway.conftest import tenant_key
from tests.live import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
MODEL = "llama-3-8b"
TOOLS = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]


def test_the_home_node_gets_every_boundary_from_the_control_plane(
        cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[tuple[str, str, str | None]] = []
    applied: list[tuple[str, str, str | None]] = []
    original = ControlPlaneLink._boundary

    def recording(self: ControlPlaneLink, frame: Any) -> None:
        received.append((frame.event, frame.workflow_id, frame.tool_name))
        original(self, frame)

    monkeypatch.setattr(ControlPlaneLink, "_boundary", recording)
    for node in cluster["nodes"]:
        engine = node.engine
        for name in ("tool_started", "tool_ended", "workflow_ended"):
            method = getattr(engine, name)

            def spy(*args: Any, _m: Any = method, _n: str = name) -> None:
                applied.append((_n, args[0], args[1] if len(args) > 1 else None))
                _m(*args)

            monkeypatch.setattr(engine, name, spy)

    tenant, key = tenant_key("acme")
    client = openai.OpenAI(base_url=f"{cluster['url']}/v1", api_key=key, max_retries=0)
    headers = {"X-Saga-Workflow": "task-7", "X-Saga-Template": "swe-agent"}
    messages: list[dict[str, Any]] = [{"role": "user", "content": "fix the build " * 30}]
    reply = client.chat.completions.create(
        model=MODEL, messages=messages, tools=TOOLS, extra_headers=headers,  # type: ignore[arg-type]
        extra_body={"saga_sim": {"finish_reason": "tool_calls", "output_tokens": 8}})
    workflow = Workflow.objects.get(external_id="task-7")
    wf = str(workflow.pk)
    wait_for(lambda: len(received) >= 1, "tool_start to reach the node")
    api = Client(headers={"Authorization": f"Bearer {key}"})
    assert api.post(f"/api/workflows/{workflow.pk}/events", {"type": "tool_end"},
                    content_type="application/json").status_code == 200
    wait_for(lambda: len(received) >= 2, "tool_end to reach the node")
    messages += [reply.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": reply.choices[0].message.tool_calls[0].id,  # type: ignore[index]
                  "content": "ok"}]
    client.chat.completions.create(model=MODEL, messages=messages, extra_headers=headers,  # type: ignore[arg-type]
                                   max_tokens=4)
    assert api.post(f"/api/workflows/{workflow.pk}/events",
                    {"type": "tool_start", "tool": "pytest"},
                    content_type="application/json").status_code == 200
    assert api.post(f"/api/workflows/{workflow.pk}/complete").status_code == 200
    wait_for(lambda: len(received) >= 4, "workflow_end to reach the node")
    time.sleep(0.3)
    assert received == [("tool_start", wf, "bash"), ("tool_end", wf, None),
                        ("tool_start", wf, "pytest"), ("workflow_end", wf, None)]
    # The node applied exactly what it was told, and nothing of its own.
    assert applied == [("tool_started", wf, "bash"), ("tool_ended", wf, None),
                       ("tool_started", wf, "pytest"), ("workflow_ended", wf, None)]
    home = next(n for n in cluster["nodes"] if n.name == workflow.home_node.name)
    assert wf not in home.engine.tracker.workflows  # the node forgot it at workflow_end
