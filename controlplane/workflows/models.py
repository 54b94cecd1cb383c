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
    idle_timeout_s = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="End this template's workflows as abandoned after this many seconds without "
        "a call or tool event; empty = the cluster default (SAGA_WORKFLOW_IDLE_TIMEOUT_S).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SloStatus(models.TextChoices):
    """How a finished workflow stands against its tenant's SLO (``Workflow.slo_status``)."""

    OPEN = "", "Not finished"
    MET = "met", "Met"
    MISSED = "missed", "Missed"
    UNEVALUABLE = "unevaluable", "Unevaluable (no isolated estimate)"
    EXCLUDED = "excluded", "Not counted (failed or cancelled)"


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
    slo_status = models.CharField(
        max_length=16, choices=SloStatus.choices, default=SloStatus.OPEN, blank=True,
        editable=False,
        help_text="met / missed (abandoned workflows too) / unevaluable (no isolated estimate: a "
        "node's profile is unknown) / excluded (failed, cancelled); never counted as met unless "
        "the slowdown was evaluated.",
    )
    isolated_basis = models.CharField(
        max_length=300, blank=True, editable=False,
        help_text="What the isolated estimate was computed from, or why there is none.",
    )
    recompute_tokens = models.PositiveBigIntegerField(
        null=True, blank=True, editable=False,
        help_text="Prompt tokens the workflow had computed before that its nodes computed again "
        "(its own previous context, not served from cache).",
    )
    aeg_learned = models.BooleanField(
        default=False, editable=False, help_text="Fed into its template's execution graph."
    )
    # What routing's WorkflowView needs, kept as calls finish (plugins.views: service_s,
    # isolated_s, context_tokens), so routing reads one row, not the workflow's calls.
    service_s = models.FloatField(
        default=0.0, editable=False,
        help_text="Engine seconds its calls received, as their nodes reported them.")
    calls_isolated_s = models.FloatField(
        default=0.0, editable=False,
        help_text="Isolated seconds of its completed calls (the SLO formula's per-call term).")
    calls_wall_s = models.FloatField(
        default=0.0, editable=False,
        help_text="Seconds its finished calls took, queued to finished (the rest of its life "
        "is its agent's own time).")
    context_tokens = models.PositiveIntegerField(
        default=0, editable=False,
        help_text="Prompt plus output tokens of its last completed call.")

    class Meta:
        ordering = ["-submitted_at"]
        indexes = [
            models.Index(fields=["tenant", "state"]),
            models.Index(fields=["state", "submitted_at"]),
            models.Index(fields=["finished_at"], name="workflow_finished_at"),
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
        from controlplane.console.events import workflow_changed

        workflow_changed(self.pk)  # the console's live pages, once committed

    def _completion_fields(self, target: str, now: datetime) -> dict[str, object]:
        """TCT, isolated time and SLO status of a workflow ending now (``controlplane.slo.
        isolated``: the isolated time comes from its recorded calls; a workflow without any keeps
        an estimate it was given)."""
        from controlplane.slo.isolated import estimate

        tct = (now - self.submitted_at).total_seconds()
        fields: dict[str, object] = {"finished_at": now, "tct_s": tct}
        found = estimate(self, now)
        isolated = found.seconds
        if found.calls == 0 and isolated is None:
            isolated = self.est_isolated_s
        fields.update(est_isolated_s=isolated, isolated_basis=found.basis[:300],
                      recompute_tokens=found.recompute_tokens)
        if target == WorkflowState.COMPLETED:
            if isolated:
                met = tct / isolated <= self.tenant.slo_slowdown
                fields.update(slo_met=met, slo_status=SloStatus.MET if met else SloStatus.MISSED)
            else:
                fields.update(slo_met=None, slo_status=SloStatus.UNEVALUABLE)
        elif target == WorkflowState.ABANDONED:
            # it never completed: no TCT, and a task the agent gave up on missed its SLO
            fields.update(tct_s=None, slo_met=False, slo_status=SloStatus.MISSED)
        else:
            fields.update(slo_met=None, slo_status=SloStatus.EXCLUDED)
        return fields


class CallOutcome(models.TextChoices):
    PENDING = "pending", "Pending"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    NODE_LOST = "node_lost", "Node lost (retryable)"
    INTERRUPTED = "interrupted", "Interrupted (its gateway process stopped)"


TERMINAL_OUTCOMES: frozenset[str] = frozenset(
    {CallOutcome.COMPLETED, CallOutcome.FAILED, CallOutcome.CANCELLED, CallOutcome.NODE_LOST,
     CallOutcome.INTERRUPTED}
)
"""Every call ends in exactly one of these; ``pending`` means a gateway process still holds it."""


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
    service_s = models.FloatField(
        null=True, blank=True, help_text="Engine seconds the call received (its node's report).")
    isolated_s = models.FloatField(
        null=True, blank=True,
        help_text="Seconds it would take alone on an idle node of its node's profile.")
    gateway = models.CharField(
        max_length=64, blank=True, editable=False,
        help_text="The gateway process that holds the call while it is pending (reconciliation "
        "closes the pending calls of a process that is gone).",
    )

    class Meta:
        ordering = ["workflow", "seq"]
        indexes = [
            models.Index(fields=["gateway"], condition=Q(outcome="pending"),
                         name="call_pending_by_gateway"),
            # the SLO series and /metrics read calls by when they ended and were routed
            models.Index(fields=["finished_at"], name="call_finished_at"),
            models.Index(fields=["queued_at"], name="call_queued_at"),
        ]
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
