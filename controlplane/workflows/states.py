"""The workflow state machine, in one place.

Every state change of a workflow goes through ``check_transition`` (``Workflow.transition_to``
calls it), so the gateway, the REST API, node agents and Celery tasks cannot disagree on what
is legal::

    submitted ──> running <──> waiting_tool
        │            │              │
        └────────────┴──────────────┴──> completed | failed | cancelled | abandoned  (terminal)

A workflow is ``running`` while one of its LLM calls is queued or served (or its agent thinks
between calls) and ``waiting_tool`` while its agent runs a tool; the scheduler cares about the
difference because a waiting workflow holds KV cache it will reuse and can be moved between
nodes cheaply. ``abandoned``: nothing happened for the idle timeout of its template
(``AgentTemplate.idle_timeout_s``, default ``SAGA_WORKFLOW_IDLE_TIMEOUT_S``) and no call was in
flight, so the reaper (``controlplane.workflows.lifecycle``) ended it: its quota slot is free,
its home node is told (``workflow_end`` with outcome ``abandoned``) and it counts as SLO missed.
"""

from __future__ import annotations

from django.db import models


class WorkflowState(models.TextChoices):
    SUBMITTED = "submitted", "Submitted"
    RUNNING = "running", "Running"
    WAITING_TOOL = "waiting_tool", "Waiting on a tool"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    ABANDONED = "abandoned", "Abandoned (idle timeout)"


TERMINAL_STATES: frozenset[str] = frozenset(
    {WorkflowState.COMPLETED, WorkflowState.FAILED, WorkflowState.CANCELLED,
     WorkflowState.ABANDONED}
)

ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    WorkflowState.SUBMITTED: frozenset(
        {WorkflowState.RUNNING, WorkflowState.FAILED, WorkflowState.CANCELLED,
         WorkflowState.ABANDONED}
    ),
    WorkflowState.RUNNING: frozenset(
        {WorkflowState.WAITING_TOOL} | TERMINAL_STATES
    ),
    WorkflowState.WAITING_TOOL: frozenset({WorkflowState.RUNNING} | TERMINAL_STATES),
    WorkflowState.COMPLETED: frozenset(),
    WorkflowState.FAILED: frozenset(),
    WorkflowState.CANCELLED: frozenset(),
    WorkflowState.ABANDONED: frozenset(),
}


class IllegalTransition(Exception):
    """A workflow was asked to move to a state its current state does not lead to."""

    def __init__(self, workflow: object, current: str, target: str) -> None:
        self.workflow = workflow
        self.current = current
        self.target = target
        allowed = ", ".join(sorted(ALLOWED_TRANSITIONS.get(current, ()))) or "none (terminal)"
        super().__init__(
            f"workflow {workflow}: illegal transition {current} -> {target} "
            f"(allowed from {current}: {allowed})"
        )


def check_transition(workflow: object, current: str, target: str) -> None:
    """Raise ``IllegalTransition`` unless ``current -> target`` is an edge of the machine."""
    if target not in ALLOWED_TRANSITIONS.get(current, frozenset()):
        raise IllegalTransition(workflow, current, target)
