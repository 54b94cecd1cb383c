"""The console's websockets, one per page group, for staff sessions only (from allowed
origins: ``controlplane.websocket_security.browser_socket``).

Each consumer sends its page's whole state when it connects (so a page that reconnects after an
outage is current again at once), then again after each change it is told about
(``controlplane.console.events``), at most once per ``debounce_s``: a burst of calls costs one
read per page, and what a page shows is what a reload would show.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from controlplane.console import events

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404


class StaffPageConsumer(AsyncJsonWebsocketConsumer):
    """A page's live state: ``snapshot()`` sent on connect and after changes."""

    debounce_s = 0.5
    groups_joined: list[str]

    async def connect(self) -> None:
        self.groups_joined = []
        self._refresh: asyncio.Task[None] | None = None
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        if not user.is_staff:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        groups = await database_sync_to_async(self.page_groups)()
        if groups is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined = groups
        await self.accept()
        await self.send_snapshot()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)
        refresh = getattr(self, "_refresh", None)
        if refresh is not None:
            refresh.cancel()

    def query(self, name: str) -> str:
        values = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        return (values.get(name) or [""])[0]

    def kwarg(self, name: str) -> Any:
        return self.scope["url_route"]["kwargs"][name]

    def page_groups(self) -> list[str] | None:
        """The groups to join (None: the page's object does not exist)."""
        raise NotImplementedError

    def snapshot(self) -> dict[str, Any] | None:
        raise NotImplementedError

    async def send_snapshot(self) -> None:
        state = await database_sync_to_async(self.snapshot)()
        if state is not None:
            await self.send_json(state)

    def changed(self) -> None:
        """Something the page shows changed: refresh once the burst settles."""
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._refresh_later())

    async def _refresh_later(self) -> None:
        await asyncio.sleep(self.debounce_s)
        await self.send_snapshot()


class WorkflowListConsumer(StaffPageConsumer):
    """``/ws/ui/workflows/?<the page's filters>``: the list as the page's filters select it."""

    debounce_s = 1.0

    def page_groups(self) -> list[str] | None:
        return [events.WORKFLOWS_GROUP]

    def snapshot(self) -> dict[str, Any]:
        from controlplane.console.data import filter_workflows, workflow_rows
        from controlplane.console.views.workflows import FILTERS, LIST_LIMIT

        rows = filter_workflows({name: self.query(name) for name in FILTERS})
        return {"type": "workflows", "rows": workflow_rows(rows, LIST_LIMIT),
                "count": rows.count()}

    async def workflow_changed(self, event: dict[str, Any]) -> None:
        self.changed()


class WorkflowConsumer(StaffPageConsumer):
    """``/ws/ui/workflows/<id>/``: one workflow's calls, tool calls and forecast."""

    debounce_s = 0.25

    def page_groups(self) -> list[str] | None:
        from controlplane.workflows.models import Workflow

        workflow_id = self.kwarg("workflow_id")
        if not Workflow.objects.filter(pk=workflow_id).exists():
            return None
        return [events.workflow_group(workflow_id)]

    def snapshot(self) -> dict[str, Any] | None:
        from controlplane.console.data import workflow_detail

        detail = workflow_detail(self.kwarg("workflow_id"))
        return {"type": "workflow", **detail} if detail is not None else None

    async def workflow_changed(self, event: dict[str, Any]) -> None:
        self.changed()


class TemplateConsumer(StaffPageConsumer):
    """``/ws/ui/templates/<name>/``: the template's learned execution graph."""

    def page_groups(self) -> list[str] | None:
        from controlplane.workflows.models import AgentTemplate

        name = self.kwarg("name")
        if not AgentTemplate.objects.filter(name=name).exists():
            return None
        return [events.template_group(name)]

    def snapshot(self) -> dict[str, Any] | None:
        from controlplane.console.data import aeg_graph
        from controlplane.workflows.models import AgentTemplate

        template = AgentTemplate.objects.filter(name=self.kwarg("name")).first()
        return {"type": "aeg", "graph": aeg_graph(template)} if template else None

    async def template_changed(self, event: dict[str, Any]) -> None:
        self.changed()


class PoliciesConsumer(StaffPageConsumer):
    """``/ws/ui/policies/``: every rollout as nodes answer (``policy.rollout`` frames)."""

    def page_groups(self) -> list[str] | None:
        return [events.POLICIES_GROUP]

    def snapshot(self) -> dict[str, Any]:
        from controlplane.console.data import policy_kinds, rollout_payload
        from controlplane.policies.models import PolicyActivation

        latest = []
        for kind in policy_kinds():
            head = PolicyActivation.objects.newest(kind)
            if head is not None:
                latest.append(rollout_payload(head.pk))
        return {"type": "policy.rollouts", "rollouts": latest}

    async def policy_rollout(self, event: dict[str, Any]) -> None:
        await self.send_json(event)


class TenantsConsumer(StaffPageConsumer):
    """``/ws/ui/tenants/`` (every tenant) and ``/ws/ui/tenants/<slug>/``: the SLO series'
    points as the aggregation writes them (the SLO app's groups, ``controlplane.slo.series``),
    and the figures that move with them (slowdown distribution, quota use)."""

    debounce_s = 0.2

    def page_groups(self) -> list[str] | None:
        from controlplane.slo.series import SERIES_GROUP, tenant_group
        from controlplane.tenants.models import Tenant

        slug = self.scope["url_route"]["kwargs"].get("slug")
        if slug is None:
            return [SERIES_GROUP]
        tenant = Tenant.objects.filter(slug=slug).first()
        return [tenant_group(tenant.pk)] if tenant is not None else None

    def snapshot(self) -> dict[str, Any] | None:
        from controlplane.console.tenant_data import all_overviews, overview
        from controlplane.tenants.models import Tenant

        slug = self.scope["url_route"]["kwargs"].get("slug")
        if slug is None:
            return {"type": "tenants", "overviews": all_overviews()}
        tenant = Tenant.objects.filter(slug=slug).first()
        return {"type": "tenant", **overview(tenant)} if tenant is not None else None

    async def slo_point(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "slo.point", "point": event["point"]})
        self.changed()


class ClusterConsumer(StaffPageConsumer):
    """``/ws/ui/nodes/``: every node (snapshot), then each heartbeat and status change
    (``node.status``, as the admin's ``/ws/ui/cluster/`` gets them) and every rollout answer
    (``policy.rollout``: what each node runs per policy kind)."""

    def page_groups(self) -> list[str] | None:
        return [events.CLUSTER_GROUP]

    def snapshot(self) -> dict[str, Any]:
        from controlplane.console.data import cluster_nodes

        return {"type": "cluster", "nodes": cluster_nodes()}

    async def node_status(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def policy_rollout(self, event: dict[str, Any]) -> None:
        await self.send_json(event)


class WhatIfRunConsumer(StaffPageConsumer):
    """``/ws/ui/whatif/<id>/``: one what-if run's state, sent again whenever a task moves (the
    jobs announce every progress report, ``controlplane.whatif.jobs.announce``)."""

    debounce_s = 0.25

    def page_groups(self) -> list[str] | None:
        from controlplane.whatif.jobs import run_group
        from controlplane.whatif.models import WhatIfRun

        run_id = self.kwarg("run_id")
        if not WhatIfRun.objects.filter(pk=run_id).exists():
            return None
        return [run_group(run_id)]

    def snapshot(self) -> dict[str, Any] | None:
        from controlplane.console.views.whatif import state
        from controlplane.whatif.models import WhatIfRun

        run = WhatIfRun.objects.filter(pk=self.kwarg("run_id")).first()
        return {"type": "whatif", "run": state(run)} if run is not None else None

    async def whatif_changed(self, event: dict[str, Any]) -> None:
        self.changed()
