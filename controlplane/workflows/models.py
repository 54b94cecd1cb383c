"""Agent templates, workflows, and the LLM calls and tool calls they are made of.

The unit SAGA schedules is the workflow (one agent task); ``Call`` and ``ToolCall`` record its
steps with the timings the Agent Execution Graph learns from and the dashboards plot.
"""

from __future__ import annotations

from datetime import datetime

from django.db import models, transaction
from django.db.models import F, Q
from django.utils import timezone

from controlplane.tenants.models import Tenant
from controlplane.workflows.states import (
    TERMINAL_STATES,
    IllegalTransition,
    WorkflowState,
    check_transition,
)


class AgentTemplate(models.Model):
    """A kind of agent (``swe-agent``, ``webarena``): execution graphs are learned per template."""

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    aeg_stats = models.JSONField(
        default=dict,
        blank=True,
        help_text="Agent Execution Graph statistics, written by the policy layer.",
    )
    aeg_updated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Workflow(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="workflows")
    template = models.ForeignKey(
        AgentTemplate, on_delete=models.PROTECT, related_name="workflows"
    )
    external_id = models.CharField(
        max_length=200, blank=True, help_text="The agent's own id for the task (unique per tenant)."
    )
    metadata = models.JSONField(default=dict, blank=True)
    hints = models.JSONField(
        default=dict, blank=True, help_text="Optional hints, e.g. expected number of calls."
    )
    state = models.CharField(
        max_length=16, choices=WorkflowState.choices, default=WorkflowState.SUBMITTED,
        editable=False,
    )
    home_node = models.ForeignKey(
        "nodes.Node", null=True, blank=True, on_delete=models.SET_NULL, related_name="workflows"
    )
    submitted_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    state_changed_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    tct_s = models.FloatField(
        null=True, blank=True, help_text="Task completion time: finished - submitted, seconds."
    )
    est_isolated_s = models.FloatField(
        null=True, blank=True, help_text="Estimated completion time had it run alone, seconds."
    )
    slo_met = models.BooleanField(null=True, blank=True)
    aeg_learned = models.BooleanField(
        default=False, editable=False, help_text="Fed into its template's execution graph."
    )

    class Meta:
        ordering = ["-submitted_at"]
        indexes = [
            models.Index(fields=["tenant", "state"]),
            models.Index(fields=["state", "submitted_at"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "external_id"],
                condition=~Q(external_id=""),
                name="workflow_external_id_unique_per_tenant",
                violation_error_message="this tenant already has a workflow with that external id",
            ),
            models.CheckConstraint(
                condition=Q(est_isolated_s__isnull=True) | Q(est_isolated_s__gt=0),
                name="workflow_est_isolated_positive",
                violation_error_message="est_isolated_s must be greater than 0",
            ),
        ]

    def __str__(self) -> str:
        return self.external_id or f"workflow-{self.pk}"

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def slowdown(self) -> float | None:
        """TCT over estimated isolated time: the quantity tenants' SLOs are stated in."""
        if self.tct_s is None or not self.est_isolated_s:
            return None
        return self.tct_s / self.est_isolated_s

    def transition_to(self, target: str, *, at: datetime | None = None) -> None:
        """Move to ``target``, enforcing the state machine even under concurrent writers.

        The UPDATE is conditional on the state this instance last saw, so two processes racing
        to move the same workflow cannot both succeed: the loser gets ``IllegalTransition``
        naming the state the winner left.
        """
        check_transition(self, self.state, target)
        now = at or timezone.now()
        changes: dict[str, object] = {"state": target, "state_changed_at": now}
        if target == WorkflowState.RUNNING and self.started_at is None:
            changes["started_at"] = now
        if target in TERMINAL_STATES:
            changes.update(self._completion_fields(target, now))
        with transaction.atomic():
            updated = type(self).objects.filter(pk=self.pk, state=self.state).update(**changes)
            if updated != 1:
                current = type(self).objects.values_list("state", flat=True).get(pk=self.pk)
                self.state = current
                raise IllegalTransition(self, current, target)
        for field, value in changes.items():
            setattr(self, field, value)

    def _completion_fields(self, target: str, now: datetime) -> dict[str, object]:
        tct = (now - self.submitted_at).total_seconds()
        fields: dict[str, object] = {"finished_at": now, "tct_s": tct}
        if target == WorkflowState.COMPLETED and self.est_isolated_s:
            fields["slo_met"] = tct / self.est_isolated_s <= self.tenant.slo_slowdown
        return fields


class CallOutcome(models.TextChoices):
    PENDING = "pending", "Pending"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    NODE_LOST = "node_lost", "Node lost (retryable)"


class Call(models.Model):
    """One LLM call of a workflow, with the timings of its life on a node."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="calls")
    seq = models.PositiveIntegerField(help_text="Position in the workflow, from 0.")
    node = models.ForeignKey(
        "nodes.Node", null=True, blank=True, on_delete=models.SET_NULL, related_name="calls"
    )
    prompt_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(
        default=0, help_text="Prompt tokens served from the prefix cache."
    )
    output_tokens = models.PositiveIntegerField(default=0)
    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    first_token_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(
        max_length=16, choices=CallOutcome.choices, default=CallOutcome.PENDING
    )
    finish_reason = models.CharField(max_length=32, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["workflow", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "seq"], name="call_seq_unique"),
            models.CheckConstraint(
                condition=Q(cached_tokens__lte=F("prompt_tokens")),
                name="call_cached_within_prompt",
                violation_error_message="cached_tokens cannot exceed prompt_tokens",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow}#{self.seq}"

    @property
    def queue_s(self) -> float | None:
        return _seconds_between(self.queued_at, self.started_at)

    @property
    def ttft_s(self) -> float | None:
        return _seconds_between(self.queued_at, self.first_token_at)

    @property
    def latency_s(self) -> float | None:
        return _seconds_between(self.queued_at, self.finished_at)


class ToolCall(models.Model):
    """A tool the agent ran between two LLM calls (the gap SAGA keeps the KV cache across)."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="tool_calls")
    after_call = models.ForeignKey(
        Call, null=True, blank=True, on_delete=models.SET_NULL, related_name="tool_calls"
    )
    name = models.CharField(max_length=200)
    expected_duration_s = models.FloatField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["workflow", "started_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(ended_at__isnull=True) | Q(ended_at__gte=F("started_at")),
                name="toolcall_ends_after_start",
                violation_error_message="ended_at cannot be before started_at",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow}:{self.name}"

    @property
    def duration_s(self) -> float | None:
        return _seconds_between(self.started_at, self.ended_at)


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds()
