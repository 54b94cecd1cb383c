"""``/ws/slo/``: each new SLO series point, pushed as it is written (``slo.point`` frames).

A staff user's browser session gets every tenant's points (or one tenant's with
``?tenant=<slug>``); a tenant API key with the ``workflows`` scope (``Authorization: Bearer``,
no browser) gets its own tenant's. Anything else is closed with 4401 (no credentials) or 4403.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from controlplane.nodes.consumers import bearer_token
from controlplane.slo.series import SERIES_GROUP, tenant_group

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403


class SloSeriesConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None

    async def connect(self) -> None:
        group = await database_sync_to_async(self._group)()
        if isinstance(group, int):
            await self.close(code=group)
            return
        self.group = group
        await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    def _group(self) -> str | int:
        from controlplane.tenants.models import ApiKey, ApiKeyScope, Tenant

        token = bearer_token(self.scope)
        if token:
            key = ApiKey.authenticate(token, scope=ApiKeyScope.WORKFLOWS)
            return tenant_group(key.tenant_id) if key is not None else CLOSE_UNAUTHORIZED
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return CLOSE_UNAUTHORIZED
        if not user.is_staff:
            return CLOSE_FORBIDDEN
        query = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        slug = (query.get("tenant") or [""])[0]
        if not slug:
            return SERIES_GROUP
        tenant = Tenant.objects.filter(slug=slug).first()
        return tenant_group(tenant.pk) if tenant is not None else CLOSE_FORBIDDEN

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def slo_point(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "slo.point", "point": event["point"]})
