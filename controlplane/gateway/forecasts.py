"""The Agent Execution Graph's forecasts for the workflows the gateway routes and moves.

The gateway sees a workflow through its records, not event by event, so it asks the learned
graph of the workflow's template for the forecast of the state its view says it is in (a call
in flight, or between calls: in a tool or thinking), with the time already spent there. The
graphs are the ones the control plane learned from completed workflows
(``ClusterDirectory`` loads them), so routing and work stealing forecast with the whole
cluster's experience, as the nodes' policies do.
"""

from __future__ import annotations

from collections.abc import Mapping

from plugins.aeg import AEGRegistry
from plugins.views import Prediction, WorkflowView


class ViewForecasts:
    """A ``Predictor`` over the gateway's WorkflowViews (``plugins.views.StaticContext``)."""

    def __init__(self, aeg: AEGRegistry, views: Mapping[str, WorkflowView]) -> None:
        self._aeg = aeg
        self._views = views

    def predict(self, workflow_id: str, now_s: float | None = None) -> Prediction:
        view = self._views.get(workflow_id)
        if view is None:
            return Prediction(p_next_call=1.0, expected_gap_s=0.0, reuse_tokens=0.0)
        if view.state in ("queued", "running"):
            state = "call"
        elif view.state == "waiting_tool":
            state = "tool" if view.tool_name else "after_call"
        else:
            state = "new"
        return self._aeg.forecast(view.template, state, context_tokens=view.context_tokens,
                                  elapsed_s=view.tool_elapsed_s, tool=view.tool_name)
