"""Tool and workflow boundaries, pushed to the workflow's home node.

The control plane is the one place tool boundaries are known: the gateway infers them from the
OpenAI conversation (a call that ends with ``finish_reason == "tool_calls"`` starts a tool, the
workflow's next call ends it) and agents may report them through the REST API. Each boundary
the workflow services record is sent, once its transaction commits, to the home node's control
connection (``workflow`` frame of :mod:`nodeagent.wire`), so the node's engine pins and releases
KV and learns the execution graph from the same facts the control plane recorded; nodes never
infer boundaries themselves.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from controlplane.nodes.models import node_group


def push_on_commit(node_id: int | None, workflow_id: int, event: str,
                   tool_name: str | None = None, outcome: str = "") -> None:
    """Send ``event`` (tool_start, tool_end, workflow_end) to the node once committed."""
    if node_id is None:
        return

    def send() -> None:
        async_to_sync(push)(node_id, workflow_id, event, tool_name, outcome)

    transaction.on_commit(send)


async def push(node_id: int | None, workflow_id: int, event: str, tool_name: str | None = None,
               outcome: str = "") -> None:
    """Send ``event`` to the node now, from an event loop: for writers that commit on their own
    connections (the gateway's hot path, ``controlplane.gateway.ledger``), after the commit."""
    layer = get_channel_layer()
    if node_id is None or layer is None:
        return
    boundary: dict[str, Any] = {"event": event, "workflow_id": str(workflow_id),
                                "tool_name": tool_name, "outcome": outcome}
    await layer.group_send(node_group(node_id), {"type": "workflow.boundary",
                                                 "boundary": boundary})
