"""Agent templates: each template's learned Agent Execution Graph, live and read-only."""

from __future__ import annotations

from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404

from controlplane.console.data import aeg_graph
from controlplane.console.views.common import page, staff_page
from controlplane.workflows.models import AgentTemplate


@staff_page
def template_list(request: HttpRequest) -> HttpResponse:
    rows = AgentTemplate.objects.annotate(n=Count("workflows")).order_by("name")
    items = [{"name": t.name, "workflows": t.n,
              "learned": (t.aeg_stats or {}).get("workflows_seen", 0),
              "updated_at": t.aeg_updated_at} for t in rows]
    return page(request, "console/templates.html", "templates", templates=items)


@staff_page
def template(request: HttpRequest, name: str) -> HttpResponse:
    row = get_object_or_404(AgentTemplate, name=name)
    return page(request, "console/template.html", "templates", template=row,
                graph=aeg_graph(row))
