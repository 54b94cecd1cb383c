"""The :class:`~plugins.views.SchedulingContext` a vLLM engine gives its policies.

One engine is one node: ``nodes`` holds this engine's own :class:`~plugins.views.NodeView`, and
``predict`` asks the policy manager's Agent Execution Graph, so the policies get the same
forecasts here as in the simulator. The context is rebuilt once per scheduling step (cheap: it
only holds references), which keeps ``now_s`` fixed for the whole step as the policies expect.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from nodeagent.vllm_hooks.workflows import WorkflowRegistry
from plugins.manager import PolicyManager
from plugins.views import NodeView, Prediction, TenantView, WorkflowView


@dataclass(frozen=True, slots=True)
class EngineContext:
    """A scheduling context over one engine's registry, frozen at ``now_s``."""

    now_s: float
    tenants: Mapping[str, TenantView]
    nodes: Mapping[str, NodeView]
    registry: WorkflowRegistry
    manager: PolicyManager
    _default_tenants: dict[str, TenantView] = field(default_factory=dict, repr=False)

    def workflow(self, workflow_id: str) -> WorkflowView | None:
        return self.registry.workflow_view(workflow_id, self.now_s)

    def predict(self, workflow_id: str) -> Prediction:
        wf = self.registry.workflows.get(workflow_id)
        context = wf.context_tokens if wf is not None else None
        return self.manager.predict(workflow_id, self.now_s, context)

    def tenant(self, name: str) -> TenantView:
        """The tenant's view; a tenant the node agent never described gets weight 1."""
        view = self.tenants.get(name)
        if view is None:
            view = self._default_tenants.get(name)
            if view is None:
                view = self._default_tenants[name] = TenantView(name=name)
        return view
