"""The gateway as a cluster-tier host: the real ``/v1`` HTTP path of a live control plane
(``tests.live.serve_control_plane``: uvicorn, Channels over Redis, PostgreSQL), whose routing
is the active routing policy (``controlplane/gateway/calls.py`` ``_route``), and the real
work-stealing round (``controlplane/gateway/rebalance.py`` ``rebalance_homes``, what the
celery task ``rebalance_workflows`` runs).

Nodes are registered in the database with heartbeats this host controls: each heartbeat is the
``wire.Heartbeat`` a node would send, stored by ``Node.record_heartbeat`` as the node consumer
stores it, carrying the node views the bench cluster's policy saw at the same decision (its
private cached tokens of the probed workflow included, as a simulated node reports them), so
both hosts decide on the same node states. Each node's address is a real node-agent API
(``NodeServer`` over a ``SimBackend``, no control connection) that answers the relayed calls.

The gateway's routing and rebalancing use a recording policy registry: the process-wide
``runtime.directory`` is replaced, for the test, by one whose PolicyManager is built over it.
Policies are activated as an operator does, through ``activate_policy`` (the directory picks
the activation up on its next refresh).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import uvicorn

from controlplane.gateway import runtime
from controlplane.gateway.directory import ClusterDirectory
from controlplane.gateway.rebalance import rebalance_homes
from controlplane.nodes.models import Node, NodeStatus
from controlplane.policies.models import Policy
from controlplane.policies.services import activate_policy
from controlplane.tenants.models import ApiKey, Tenant
from controlplane.workflows import services
from controlplane.workflows.models import Call as CallRecord
from nodeagent import wire
from nodeagent.agent.http import NodeServer
from nodeagent.agent.sim_backend import SimBackend
from nodeagent.openai_api import TOKENS_PER_MESSAGE
from plugins.manager import PolicyManager
from tests.conformance.cluster_hosts import scenario_profile
from tests.conformance.recording import Recorder, recording_registry
from tests.conformance.scenarios import Call, ClusterScenario, token_text
from tests.live import free_port, wait_for

MODEL = "conformance"
BLOCK_TOKENS = 16
NODE_KEY = "conformance-gateway-to-node-key"


@contextlib.contextmanager
def serve_node_api(name: str) -> Iterator[str]:
    """A node agent's OpenAI API (a fast simulated engine), without a control connection."""
    engine = SimBackend("h100-llama3-8b", model_name=MODEL, node_id=name, speed=1000.0)
    server = NodeServer(engine, api_key=NODE_KEY, model_name=MODEL)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(server.app, host="127.0.0.1", port=port,
                                       lifespan="off", log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    wait_for(lambda: uv.started, f"node API {name}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


def recording_directory(recorder: Recorder) -> ClusterDirectory:
    """The gateway's directory, always stale (re-read in the background after every call) and
    re-read at once after each heartbeat and activation, over a PolicyManager of recording
    policies."""
    directory = ClusterDirectory(refresh_s=0.0)
    directory.manager = PolicyManager(recording_registry(recorder))
    directory.manager.subscribe(directory._on_policy_event)
    return directory


class GatewayHost:
    name = "gateway"

    def __init__(self, scenario: ClusterScenario, url: str, node_urls: Mapping[str, str],
                 recorder: Recorder) -> None:
        self.scenario = scenario
        self.url = url
        self.recorder = recorder
        self.tenant = Tenant.objects.create(slug="acme", name="Acme")
        _key, self.key = ApiKey.issue(self.tenant, "agents", scopes=["inference", "workflows"])
        self.nodes: dict[str, Node] = {}
        for name in scenario.nodes:
            node = Node(name=name, status=NodeStatus.UP, address=node_urls[name],
                        model_name=MODEL, kv_capacity_tokens=scenario.kv_tokens,
                        max_num_seqs=scenario.max_num_seqs,
                        profile=scenario_profile(scenario).name)
            node.assign_new_token()
            node.save()
            self.nodes[name] = node
        self.workflows: dict[str, int] = {}

    # ------------------------------------------------------------------ setup
    def activate(self, kind: str, name: str, params: Mapping[str, Any]) -> None:
        policy = Policy(kind=kind, plugin_name=name, params=dict(params))
        policy.full_clean()
        policy.save()
        activate_policy(policy, actor="conformance")
        runtime.directory.refresh(force=True)

    def create_workflow(self, name: str, template: str = "agent") -> str:
        """The workflow, as the gateway will find it by its external id; returns the id the
        gateway's policies see (its primary key)."""
        wf = services.create_workflow(self.tenant, template, external_id=name, validate=False)
        self.workflows[name] = wf.pk
        self.recorder.id_map[str(wf.pk)] = name
        return str(wf.pk)

    def heartbeat(self, nodes: list[dict[str, Any]],
                  cached: Mapping[str, Mapping[str, int]] | None = None) -> None:
        """Every node reports the given (normalised) NodeView, with the private cached tokens
        of every workflow its ``cached_workflows`` names (a node reports all it holds; the
        bench's background workflows keep their scenario names); ``cached``: node -> scenario
        workflow -> tokens, where the scenario knows them (one block otherwise)."""
        for view in nodes:
            node = self.nodes[view["node_id"]]
            tokens = (cached or {}).get(view["node_id"], {})
            own = {str(self.workflows.get(w, w)): tokens.get(w, BLOCK_TOKENS)
                   for w in view.get("cached_workflows", ())}
            beat = wire.Heartbeat(
                waiting=view["waiting"], running=view["running"],
                kv_used_tokens=view["kv_total_tokens"] - view["kv_free_tokens"],
                kv_total_tokens=view["kv_total_tokens"], queue_delay_s=view["queue_delay_s"],
                load=view["load"], cached_workflows=own)
            assert node.record_heartbeat(beat.model_dump(exclude={"type"}))
        # The gateway's hot path refreshes a stale directory in the background (calls go on
        # with the last read); the probed decision must see these heartbeats.
        runtime.directory.refresh(force=True)

    # ------------------------------------------------------------------ entry points
    def call(self, call: Call) -> str:
        """One call through ``/v1/chat/completions`` (one user message: the chat template's 4
        marker tokens plus its text make the scenario's prompt size; a tool call is scripted
        with ``saga_sim``); returns the node the gateway recorded for it."""
        tokens = self.scenario.prompt_tokens(call.prompt) - TOKENS_PER_MESSAGE
        body: dict[str, Any] = {
            "model": MODEL, "max_tokens": call.output_tokens,
            "messages": [{"role": "user", "content": token_text(range(tokens))}],
            "saga_sim": {"output_tokens": call.output_tokens,
                         "finish_reason": "tool_calls" if call.tool else "stop"}}
        if call.tool:
            body["saga_sim"]["tool_name"] = call.tool
            body["tools"] = [{"type": "function", "function": {"name": call.tool}}]
        response = httpx.post(
            f"{self.url}/v1/chat/completions", timeout=30, json=body,
            headers={"Authorization": f"Bearer {self.key}", "X-Saga-Workflow": call.workflow,
                     "X-Saga-Template": call.template})
        assert response.status_code == 200, response.text
        record = CallRecord.objects.select_related("node").get(
            workflow__external_id=call.workflow, seq=call.seq)
        assert record.prompt_tokens == self.scenario.prompt_tokens(call.prompt)
        return record.node.name  # type: ignore[union-attr]

    def rebalance(self) -> list[dict[str, Any]]:
        moves = rebalance_homes(runtime.directory, runtime.routing_state())
        return [self.recorder.normal(m) for m in moves]
