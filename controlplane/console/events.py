"""What the console's live pages are told, and how it reaches them.

Writers call these functions inside or outside a transaction; the message goes out once the
transaction commits. Messages are small (an id); each page's consumer reads what it shows from
the database itself, coalescing bursts, so a busy workflow costs the writer one group send.

From a store thread of the ASGI process (the gateway's, ``controlplane.stores.in_db_thread``)
the send is handed to the process's event loop and not waited for, so the gateway's hot path
never waits on Redis for the console; workflow changes are coalesced there, at most one message
per workflow (and one for the list) every ``COALESCE_S``, however many calls it makes. Elsewhere
(Celery, management commands) messages are sent synchronously.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

from django.db import transaction

log = logging.getLogger("saga.console")

WORKFLOWS_GROUP = "ui.workflows"
POLICIES_GROUP = "ui.policies"
CLUSTER_GROUP = "cluster"  # controlplane.nodes.consumers.CLUSTER_GROUP (the admin listens too)


def workflow_group(workflow_id: int) -> str:
    return f"ui.workflow.{workflow_id}"


def template_group(template: str) -> str:
    return f"ui.template.{template}"


def _event_loop() -> asyncio.AbstractEventLoop | None:
    """The ASGI process's loop when called on it (the gateway's hot path) or from one of its
    sync_to_async threads."""
    from asgiref.sync import SyncToAsync

    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    local = SyncToAsync.threadlocal
    if getattr(local, "main_event_loop_pid", None) != os.getpid():
        return None
    loop = getattr(local, "main_event_loop", None)
    return loop if loop is not None and loop.is_running() else None


def send_now(messages: list[tuple[str, dict[str, Any]]]) -> None:
    """Send ``(group, message)`` pairs on the channel layer."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None or not messages:
        return

    async def send_all() -> None:
        for group, message in messages:
            await layer.group_send(group, message)

    loop = _event_loop()
    if loop is not None:
        asyncio.run_coroutine_threadsafe(send_all(), loop)
        return
    from asgiref.sync import async_to_sync

    async_to_sync(send_all)()


def send_on_commit(messages: list[tuple[str, dict[str, Any]]]) -> None:
    transaction.on_commit(lambda: send_now(messages))


COALESCE_S = 0.25

_pending: set[int] = set()
_flush_loop: asyncio.AbstractEventLoop | None = None
"""The loop a flush of ``_pending`` is scheduled on (None: none is). Kept per loop, so a flush
that a loop which has since stopped never ran does not hold back announcements on the next."""
_pending_lock = threading.Lock()


def workflow_changed(workflow_id: int) -> None:
    """A workflow's state, calls or tool calls changed."""
    transaction.on_commit(lambda: _announce_workflow(workflow_id))


def workflow_committed(workflow_id: int) -> None:
    """A workflow changed in a transaction that has already committed (the gateway's hot path
    writes on its own connections, ``controlplane.gateway.ledger``): coalesced as above."""
    _announce_workflow(workflow_id)


def _announce_workflow(workflow_id: int) -> None:
    global _flush_loop
    loop = _event_loop()
    if loop is None:
        message = {"type": "workflow.changed", "workflows": [workflow_id]}
        send_now([(workflow_group(workflow_id), message), (WORKFLOWS_GROUP, message)])
        return
    with _pending_lock:
        _pending.add(workflow_id)
        if _flush_loop is loop:
            return
        _flush_loop = loop
    loop.call_soon_threadsafe(loop.call_later, COALESCE_S,
                              lambda: asyncio.ensure_future(_flush_workflows()))


async def _flush_workflows() -> None:
    global _flush_loop
    from channels.layers import get_channel_layer

    with _pending_lock:
        ids = sorted(_pending)
        _pending.clear()
        _flush_loop = None
    layer = get_channel_layer()
    if layer is None or not ids:
        return
    message = {"type": "workflow.changed", "workflows": ids}
    try:
        for workflow_id in ids:
            await layer.group_send(workflow_group(workflow_id), message)
        await layer.group_send(WORKFLOWS_GROUP, message)
    except Exception as exc:  # the console misses an update; the gateway must not care
        log.warning("console update for %d workflow(s) not sent: %s", len(ids), exc)


def template_learned(template: str) -> None:
    """A template's Agent Execution Graph was updated."""
    send_on_commit([(template_group(template),
                     {"type": "template.changed", "template": template})])


def rollout_changed(activation_id: int) -> None:
    """A node answered an activation, or it was sent: the full rollout goes to the pages (the
    payload is built here, once, rather than by every page's consumer)."""
    from controlplane.console.data import rollout_payload

    def send() -> None:
        payload = rollout_payload(activation_id)
        if payload is None:
            return
        message = {"type": "policy.rollout", "rollout": payload}
        send_now([(POLICIES_GROUP, message), (CLUSTER_GROUP, message)])

    transaction.on_commit(send)
