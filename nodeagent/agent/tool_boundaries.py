"""Tool-call boundaries inferred from the OpenAI conversation, per workflow.

A response that ends with ``finish_reason == "tool_calls"`` starts a tool call named after the
function(s) requested; the workflow's next request ends it. The engine hears both, so its
eviction policy can keep (or drop) the workflow's KV cache across the tool.
"""

from __future__ import annotations


class ToolBoundaries:
    def __init__(self) -> None:
        self._open: dict[str, str] = {}  # workflow id -> name of the tool it runs

    def call_finished(self, workflow_id: str, finish_reason: str | None,
                      tool_names: tuple[str, ...]) -> str | None:
        """Record a finished call; returns the started tool's name, if one started."""
        if finish_reason != "tool_calls" or not tool_names:
            return None
        name = ",".join(sorted(set(tool_names)))
        self._open[workflow_id] = name
        return name

    def call_arrived(self, workflow_id: str) -> str | None:
        """A new call of the workflow: the tool it was running, if any, has ended."""
        return self._open.pop(workflow_id, None)
