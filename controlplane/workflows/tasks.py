"""Background work on workflows."""

from __future__ import annotations

from celery import shared_task
from django.db import transaction

from controlplane.workflows.learning import learn, learned_once
from controlplane.workflows.lifecycle import reap_idle
from controlplane.workflows.models import Workflow


@shared_task(name="controlplane.workflows.tasks.learn_from_workflow")
def learn_from_workflow(workflow_id: int) -> bool:
    """Feed a completed workflow into its template's Agent Execution Graph, exactly once.

    The learned flag and the graph are written in one transaction: a redelivered task finds the
    flag set and learns nothing, and a task that fails leaves the flag unset for a retry.
    """
    with transaction.atomic():
        if not learned_once(workflow_id):
            return False
        learn(Workflow.objects.select_related("tenant", "template").get(pk=workflow_id))
    return True


@shared_task(name="controlplane.workflows.tasks.reap_idle_workflows")
def reap_idle_workflows() -> list[int]:
    """End workflows idle past their template's timeout as ``abandoned``; returns their ids
    (``controlplane.workflows.lifecycle``)."""
    return reap_idle()
