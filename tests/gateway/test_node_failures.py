"""A node agent killed in the middle of a streamed call: the client gets a retryable error in
the stream, the call is recorded once as node_lost, the node leaves routing, and the
workflow's next call is served by another node (its new home)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from controlplane.gateway import runtime
from controlplane.nodes.models import Node, NodeStatus
from controlplane.workflows.models import Call, CallOutcome, Workflow
from tests.faults import NodeAgentProcess
from tests.gateway.conftest import NODE_KEY, tenant_key
from tests.live import serve_control_plane, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
MODEL = "killable-8b"


def test_a_node_killed_mid_stream(transactional_db: None, redis_url: str,
                                  settings: Any) -> None:
    settings.SAGA_NODE_API_KEY = NODE_KEY
    runtime.routing_state().clear()
    with serve_control_plane() as url:
        nodes = {n.name: n for n in (
            NodeAgentProcess(url, f"k{i}", api_key=NODE_KEY, model=MODEL).start()
            for i in range(2))}
        try:
            runtime.directory.refresh(force=True)
            _tenant, key = tenant_key("acme")
            headers = {"Authorization": f"Bearer {key}", "X-Saga-Workflow": "task-9"}
            body = {"model": MODEL, "stream": True, "saga_sim": {"output_tokens": 131072},
                    "messages": [{"role": "user", "content": "long answer"}]}
            events: list[dict[str, Any]] = []
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body,
                              headers=headers, timeout=30) as response:
                assert response.status_code == 200
                lines = response.iter_lines()
                next(lines)
                victim = Call.objects.get().node.name
                nodes[victim].kill()
                for line in lines:
                    if line.startswith("data: {"):
                        events.append(json.loads(line[6:]))
            error = events[-1]["error"]
            assert error["code"] == "node_unavailable" and error["type"] == "server_error"
            call = Call.objects.get()
            assert call.outcome == CallOutcome.NODE_LOST
            wait_for(lambda: Node.objects.get(name=victim).status == NodeStatus.DOWN,
                     "the killed node down", 20)
            runtime.directory.refresh(force=True)
            retry = httpx.post(f"{url}/v1/chat/completions", headers=headers, timeout=30,
                               json={**body, "stream": False,
                                     "saga_sim": {"output_tokens": 5}})
            assert retry.status_code == 200
            second = Call.objects.get(seq=1)
            assert second.outcome == CallOutcome.COMPLETED and second.node.name != victim
            workflow = Workflow.objects.get(external_id="task-9")
            assert workflow.home_node.name == second.node.name  # re-homed
            assert Call.objects.filter(outcome=CallOutcome.NODE_LOST).count() == 1
        finally:
            for node in nodes.values():
                node.kill()
