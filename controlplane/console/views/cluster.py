"""Cluster: every node and the cluster's totals, live."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from controlplane.console.data import cluster_nodes, node_policy_kinds
from controlplane.console.views.common import page, staff_page


@staff_page
def cluster(request: HttpRequest) -> HttpResponse:
    return page(request, "console/cluster.html", "cluster", nodes=cluster_nodes(),
                kinds=node_policy_kinds())
