"""The SchedulingContext a node's policies get, on every engine: the clock frozen for the step,
the tenants, this node's view, workflow views from the tracker, forecasts from the AEG."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from nodeagent.host.tracker import WorkflowTracker
from plugins.manager import PolicyManager
from plugins.views import NodeView, Prediction, TenantView, WorkflowView


class HostContext:
    __slots__ = ("_manager", "_node", "_node_view", "_tenants", "_tracker", "now_s")

    def __init__(self, now_s: float, tenants: Mapping[str, TenantView],
                 node_view: Callable[[], NodeView], tracker: WorkflowTracker,
                 manager: PolicyManager) -> None:
        self.now_s = now_s
        self._tenants = tenants
        self._node_view = node_view
        self._node: NodeView | None = None
        self._tracker = tracker
        self._manager = manager

    @property
    def tenants(self) -> Mapping[str, TenantView]:
        return self._tenants

    @property
    def nodes(self) -> Mapping[str, NodeView]:
        if self._node is None:
            self._node = self._node_view()
        return {self._node.node_id: self._node}

    def workflow(self, workflow_id: str) -> WorkflowView | None:
        return self._tracker.workflow_view(workflow_id, self.now_s)

    def predict(self, workflow_id: str) -> Prediction:
        wf = self._tracker.workflows.get(workflow_id)
        context = wf.context_tokens if wf is not None else None
        return self._manager.predict(workflow_id, self.now_s, context)

    def tenant(self, name: str) -> TenantView:
        """The tenant's view; one the node was never told about gets weight 1."""
        return self._tenants.get(name) or TenantView(name=name)
