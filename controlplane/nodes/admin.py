from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db import models, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse

from controlplane.admin_audit import AuditedModelAdmin, ReadOnlyAdminMixin, pretty_json
from controlplane.admin_secrets import show_secret_once
from controlplane.audit.models import record, snapshot
from controlplane.nodes.models import Node, NodePolicyState

# What the node reports (at registration and in heartbeats): never edited in the admin.
REPORTED_FIELDS = ("engine", "model_name", "gpu_model", "gpu_count", "kv_capacity_tokens",
                   "status", "last_heartbeat_at", "last_load_display")


class NodePolicyStateInline(ReadOnlyAdminMixin, admin.TabularInline):
    """Which policy version each kind runs on this node, as the node acknowledged it."""

    model = NodePolicyState
    extra = 0
    can_delete = False
    fields = ("kind", "activation", "status", "error", "updated_at")
    readonly_fields = fields


@admin.register(Node)
class NodeAdmin(AuditedModelAdmin):
    """Nodes: the operator names a node, picks its engine when creating it and may change its
    address; the hardware and live state are what the node reports, read-only. Every change,
    token rotation, revocation and drain writes an AuditEvent.

    A node that has served calls or been a workflow's home cannot be deleted (revoke its token
    instead): deleting it would blank the node out of that recorded telemetry.
    """

    audit_name = "node"
    audited_actions = ("revoke_tokens", "drain_nodes")
    list_display = ("name", "engine", "status", "last_heartbeat_at", "gpu_model", "gpu_count",
                    "kv_capacity_tokens", "load_summary", "token_state")
    list_filter = ("status", "engine", "gpu_model")
    search_fields = ("name", "model_name", "gpu_model", "address")
    actions = ["revoke_tokens", "drain_nodes"]
    inlines = [NodePolicyStateInline]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    class Media:
        js = ("saga/node_status_live.js",)
        css = {"all": ("saga/admin.css",)}

    add_fieldsets = ((None, {"fields": ("name", "engine", "address")}),)
    fieldsets = (
        (None, {"fields": ("name", "engine", "address")}),
        ("Hardware (reported at registration)",
         {"fields": ("model_name", "gpu_model", "gpu_count", "kv_capacity_tokens")}),
        ("Live state", {"fields": ("status", "last_heartbeat_at", "last_load_display")}),
        ("Credentials", {"fields": ("token_display", "created_at")}),
    )

    def get_fieldsets(self, request: HttpRequest, obj: Node | None = None) -> Any:
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Node | None = None) -> Any:
        if obj is None:
            return ()
        return (*REPORTED_FIELDS, "token_display", "created_at")

    def has_delete_permission(self, request: HttpRequest, obj: Node | None = None) -> bool:
        if obj is not None and (obj.calls.exists() or obj.workflows.exists()):
            return False
        return super().has_delete_permission(request, obj)

    @admin.display(description="Last load")
    def last_load_display(self, obj: Node) -> str:
        return pretty_json(obj.last_load or {})

    @admin.display(description="Load")
    def load_summary(self, obj: Node) -> str:
        load = obj.last_load or {}
        if not load:
            return "-"
        return f"{load.get('running', 0)} running, {load.get('waiting', 0)} waiting"

    @admin.display(description="Token")
    def token_state(self, obj: Node) -> str:
        if not obj.token_prefix:
            return "none"
        return "revoked" if obj.token_revoked_at else "active"

    @admin.display(description="Token")
    def token_display(self, obj: Node) -> str:
        if not obj.token_prefix:
            return "none"
        state = "revoked" if obj.token_revoked_at else "active"
        return f"{Node.SECRET_KIND}_{obj.token_prefix}_... ({state})"

    def save_model(self, request: HttpRequest, obj: Node, form: Any, change: bool) -> None:
        if not change:
            request._saga_issued_secret = obj.assign_new_token()  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def response_add(
        self, request: HttpRequest, obj: Node, post_url_continue: Any = None
    ) -> HttpResponse:
        return self._show_token(request, obj, "Node created")

    def _show_token(self, request: HttpRequest, node: Node, title: str) -> HttpResponse:
        return show_secret_once(
            request,
            title=title,
            subject=f"Token of node {node.name}.",
            secret=request._saga_issued_secret,  # type: ignore[attr-defined]
            usage=f"Start the node agent with: saga node --token <token> --engine {node.engine}",
            back_url=reverse("admin:nodes_node_change", args=[node.pk]),
        )

    def get_urls(self) -> list[Any]:
        return [
            path("<int:node_id>/rotate-token/", self.admin_site.admin_view(self.rotate_token),
                 name="nodes_node_rotate_token"),
            *super().get_urls(),
        ]

    def rotate_token(self, request: HttpRequest, node_id: int) -> HttpResponse:
        node = get_object_or_404(Node, pk=node_id)
        if not self.has_change_permission(request, node):
            return HttpResponse(status=403)
        if request.method != "POST":
            return HttpResponse(status=405, headers={"Allow": "POST"})
        with transaction.atomic():
            before = snapshot(node)
            request._saga_issued_secret = node.rotate_token()  # type: ignore[attr-defined]
            record(actor=request.user, action="node.rotate_token", obj=node, before=before,
                   after=snapshot(node))
        return self._show_token(request, node, "Node token rotated")

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}),
                         "rotate_token_url": reverse("admin:nodes_node_rotate_token",
                                                     args=[object_id])}
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.action(description="Revoke selected nodes' tokens", permissions=["change"])
    def revoke_tokens(self, request: HttpRequest, queryset: Any) -> None:
        count = 0
        with transaction.atomic():
            for node in queryset.filter(token_revoked_at__isnull=True,
                                        token_prefix__isnull=False):
                before = snapshot(node)
                node.revoke_token()
                record(actor=request.user, action="node.revoke_token", obj=node, before=before,
                       after=snapshot(node))
                count += 1
        self.message_user(request, f"Revoked {count} node token(s).", messages.SUCCESS)

    @admin.action(description="Drain selected nodes (no new workflows; running ones finish)",
                  permissions=["change"])
    def drain_nodes(self, request: HttpRequest, queryset: Any) -> None:
        count = 0
        with transaction.atomic():
            for node in queryset.filter(drained_at__isnull=True):
                before = snapshot(node)
                node.drain()
                record(actor=request.user, action="node.drain", obj=node, before=before,
                       after=snapshot(node))
                count += 1
        self.message_user(request, f"Draining {count} node(s).", messages.SUCCESS)
