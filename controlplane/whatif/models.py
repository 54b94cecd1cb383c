"""What a replay reads besides the call rows (each call's prompt structure), and what-if runs:
one row per run, one per (policy set x load point) task, each with its progress and result."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.db import models

from controlplane.workflows.models import Call


class PromptStructure(models.Model):
    """A call's prompt as keyed block digests and a token count (``controlplane.whatif.
    digests``): never the text, and nothing a guessed text can be checked against without the
    deployment's key."""

    call = models.OneToOneField(Call, primary_key=True, on_delete=models.CASCADE,
                                related_name="prompt_structure")
    block_tokens = models.PositiveSmallIntegerField(help_text="Tokens per digested block.")
    tokens = models.PositiveIntegerField(
        help_text="Prompt tokens by the stand-in count (4 characters a token, 4 per message).")
    digests = models.BinaryField(
        help_text="Chained HMAC digests of the prompt's full blocks, 8 bytes each.")

    def __str__(self) -> str:
        return f"prompt of {self.call_id}: {self.tokens} tokens"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})


class WhatIfRun(models.Model):
    """A replay of a window of recorded traffic under candidate policy sets at load points."""

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    actor = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=RunStatus.choices,
                              default=RunStatus.QUEUED)
    since = models.DateTimeField()
    until = models.DateTimeField()
    tenants = models.JSONField(default=list, blank=True,
                               help_text="Tenant slugs replayed (empty: every tenant).")
    policies = models.JSONField(help_text="Policy sets by name, in order; the first is the "
                                "reference for speedups ('active' = what ran live).")
    cluster = models.JSONField(help_text="{'mode': 'as-recorded'} or {'mode': 'fixed', "
                               "'gpus': N, 'profile': P}, resolved to instances and profile.")
    loads = models.JSONField(help_text="Load points: the recorded arrival rate times each.")
    workload = models.JSONField(default=dict, blank=True,
                                help_text="The replayable workload built from the window "
                                "(saga-workload/1), so every task replays the same one.")
    recording = models.JSONField(default=dict, blank=True,
                                 help_text="What was recorded and what was estimated, the live "
                                 "per-workflow figures, the active set's swaps.")
    results_json = models.TextField(
        blank=True, help_text="results.json, merged from the tasks (text: PostgreSQL's jsonb "
        "would reorder the policy sets, the first of which is the reference).")
    report_html = models.TextField(blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"what-if #{self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    @property
    def results(self) -> dict[str, Any] | None:
        return json.loads(self.results_json) if self.results_json else None

    @results.setter
    def results(self, value: dict[str, Any] | None) -> None:
        self.results_json = "" if value is None else json.dumps(value, allow_nan=False,
                                                                 default=str)


class WhatIfTask(models.Model):
    """One policy set at one load point: one Celery task."""

    run = models.ForeignKey(WhatIfRun, on_delete=models.CASCADE, related_name="tasks")
    index = models.PositiveIntegerField()
    policy = models.CharField(max_length=500)
    load = models.FloatField()
    status = models.CharField(max_length=16, choices=RunStatus.choices,
                              default=RunStatus.QUEUED)
    done = models.PositiveIntegerField(default=0, help_text="Workflows finished so far.")
    total = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True, help_text="Who ran it (host:pid).")
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"],
                                               name="whatif_task_index_unique")]

    def __str__(self) -> str:
        return f"{self.policy} @ {self.load:g}"
