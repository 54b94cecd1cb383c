"""Websocket routes of the console's pages (staff sessions, allowed origins)."""

from django.urls import path

from controlplane.console import consumers
from controlplane.websocket_security import browser_socket

websocket_urlpatterns = [
    path("ws/ui/nodes/", browser_socket(consumers.ClusterConsumer.as_asgi())),
    path("ws/ui/workflows/", browser_socket(consumers.WorkflowListConsumer.as_asgi())),
    path("ws/ui/workflows/<int:workflow_id>/",
         browser_socket(consumers.WorkflowConsumer.as_asgi())),
    path("ws/ui/templates/<str:name>/", browser_socket(consumers.TemplateConsumer.as_asgi())),
    path("ws/ui/policies/", browser_socket(consumers.PoliciesConsumer.as_asgi())),
    path("ws/ui/tenants/", browser_socket(consumers.TenantsConsumer.as_asgi())),
    path("ws/ui/tenants/<slug:slug>/", browser_socket(consumers.TenantsConsumer.as_asgi())),
    path("ws/ui/whatif/<int:run_id>/", browser_socket(consumers.WhatIfRunConsumer.as_asgi())),
]
