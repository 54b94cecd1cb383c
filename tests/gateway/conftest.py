from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.tenants.models import ApiKey, Tenant
from tests.live import NodeProcess, serve_control_plane, wait_for

NODE_KEY = "gateway-to-node-test-key"


@pytest.fixture
def cluster(transactional_db: None, redis_url: str, settings: Any) -> Iterator[dict[str, Any]]:
    """A control plane with two simulated nodes; the gateway at <url>/v1."""
    import redis

    redis.Redis.from_url(redis_url).ping()
    settings.SAGA_NODE_API_KEY = NODE_KEY
    from controlplane.gateway import runtime as views

    views.routing_state().clear()
    views.directory.refresh(force=True)
    with serve_control_plane() as url:
        nodes = [NodeProcess(url, f"gpu-{i}", api_key=NODE_KEY).start() for i in range(2)]
        views.directory.refresh(force=True)
        wait_for(lambda: len(views.directory.nodes_for("llama-3-8b")) == 2
                 or views.directory.refresh(force=True), "both nodes in the directory")
        try:
            yield {"url": url, "nodes": nodes}
        finally:
            for node in nodes:
                node.stop()


def tenant_key(slug: str, **tenant_fields: Any) -> tuple[Tenant, str]:
    tenant = Tenant.objects.create(slug=slug, name=slug.title(), **tenant_fields)
    _key, secret = ApiKey.issue(tenant, "agents", scopes=["inference", "workflows"])
    return tenant, secret
