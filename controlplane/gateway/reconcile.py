"""Closing the calls a gateway process left open when it died.

A pending call is held by the gateway process named in its ``gateway`` column; that process
renews a liveness lease in the routing state while it runs. A process that is killed (or whose
machine is) stops renewing, and any process that runs the reconciler afterwards closes the dead
one's pending calls as ``interrupted`` and releases their in-flight leases, through the same
``finish_call`` the live path uses (so single-call workflows end ``failed``, tokens and tools are
handled once). Every gateway process reconciles on start-up and periodically (its housekeeping
loop), and celery beat runs it too (``controlplane.workflows.tasks.reconcile_calls``): whichever
runs first closes a call, the conditional UPDATE makes the others no-ops.
"""

from __future__ import annotations

import logging

from controlplane.gateway.calls import Outcome, Ticket, finish_call
from controlplane.gateway.directory import NodeEntry
from controlplane.gateway.routing_state import RoutingState
from controlplane.workflows.models import Call, CallOutcome
from plugins.views import NodeView

log = logging.getLogger("saga.gateway.reconcile")

BATCH = 500


def ticket_for(call: Call) -> Ticket:
    """A ticket for a recorded call, enough to finish it (lease key, workflow, tenant)."""
    node_name = call.node.name if call.node is not None else ""
    entry = NodeEntry(call.node_id or 0, node_name, "", "", NodeView(node_name, 0, 0, 0, 0, 0, 0))
    workflow = call.workflow
    return Ticket(call.pk, workflow.pk, workflow.tenant.slug, workflow.tenant_id,
                  workflow.template.name, entry, workflow.external_id == "", call.prompt_tokens)


def interrupt(calls: list[Call], state: RoutingState, reason: str) -> int:
    """Close ``calls`` as interrupted (if still pending); returns how many this closed."""
    closed = 0
    for call in calls:
        if finish_call(ticket_for(call), Outcome(CallOutcome.INTERRUPTED, error=reason), state):
            closed += 1
    return closed


def reconcile(state: RoutingState, *, own: str | None = None) -> int:
    """Close the pending calls of every gateway process that is no longer alive."""
    holders = set(Call.objects.filter(outcome=CallOutcome.PENDING)
                  .values_list("gateway", flat=True).distinct())
    holders.discard(own or "")
    if not holders:
        return 0
    named = sorted(h for h in holders if h)
    alive = state.alive(named)
    dead = [h for h in named if not alive[h]] + ([""] if "" in holders else [])
    closed = 0
    for holder in dead:
        while True:
            calls = list(Call.objects.filter(outcome=CallOutcome.PENDING, gateway=holder)
                         .select_related("node", "workflow__tenant", "workflow__template")
                         [:BATCH])
            if not calls:
                break
            closed += interrupt(calls, state, f"gateway process {holder or '(unknown)'} stopped "
                                "before the call ended; closed by reconciliation")
    if closed:
        log.warning("reconciliation closed %d calls of stopped gateway processes %s", closed,
                    ", ".join(h or "(unknown)" for h in dead))
    return closed
