"""The NinjaAPI instance: routers, error handlers, OpenAPI 3.1 schema and offline docs."""

from __future__ import annotations

from ninja import NinjaAPI

from controlplane.api import admin_nodes, admin_policies, admin_tenants, errors, workflows

api = NinjaAPI(
    title="SAGA control plane",
    version="1",
    description=(
        "Workflow-atomic scheduling of AI-agent LLM inference. Tenant endpoints take "
        "`Authorization: Bearer <api key>`; admin endpoints take a staff session or an API key "
        "with the `admin` scope. Errors are `{\"error\": {\"code\", \"message\", \"field\"}}`."
    ),
    urls_namespace="api",
)
errors.install(api)
api.add_router("/", workflows.router)
api.add_router("/admin/", admin_tenants.router)
api.add_router("/admin/", admin_policies.router)
api.add_router("/admin/", admin_nodes.router)
