"""Workflows: the live, filtered list, and one workflow's live execution graph."""

from __future__ import annotations

from urllib.parse import urlencode

from django.http import Http404, HttpRequest, HttpResponse

from controlplane.console.data import filter_workflows, workflow_detail, workflow_rows
from controlplane.console.views.common import page, staff_page
from controlplane.nodes.models import Node
from controlplane.tenants.models import Tenant
from controlplane.workflows.models import AgentTemplate
from controlplane.workflows.states import WorkflowState

FILTERS = ("tenant", "state", "template", "node", "after", "before")
LIST_LIMIT = 100


@staff_page
def workflow_list(request: HttpRequest) -> HttpResponse:
    params = {k: request.GET.get(k, "") for k in FILTERS}
    rows = filter_workflows(params)
    query = urlencode({k: v for k, v in params.items() if v})
    return page(request, "console/workflows.html", "workflows",
                rows=workflow_rows(rows, LIST_LIMIT), count=rows.count(), limit=LIST_LIMIT,
                params=params, query=query,
                tenants=Tenant.objects.order_by("slug").values_list("slug", flat=True),
                states=WorkflowState.values,
                templates=AgentTemplate.objects.order_by("name").values_list("name", flat=True),
                nodes=Node.objects.order_by("name").values_list("name", flat=True))


@staff_page
def workflow(request: HttpRequest, workflow_id: int) -> HttpResponse:
    detail = workflow_detail(workflow_id)
    if detail is None:
        raise Http404(f"no workflow {workflow_id}")
    return page(request, "console/workflow.html", "workflows", detail=detail,
                workflow=detail["workflow"])
