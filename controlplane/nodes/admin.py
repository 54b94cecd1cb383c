from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db import models, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse

from controlplane.admin_audit import AuditedModelAdmin
from controlplane.admin_secrets import show_secret_once
from controlplane.audit.models import record
from controlplane.nodes.models import Node, NodePolicyState


class NodePolicyStateInline(admin.TabularInline):
    """Which policy version each kind runs on this node, as the node acknowledged it."""

    model = NodePolicyState
    extra = 0
    can_delete = False
    fields = ("kind", "activation", "status", "error", "updated_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Node)
class NodeAdmin(AuditedModelAdmin):
    audit_name = "node"
    list_display = ("name", "engine", "status", "last_heartbeat_at", "gpu_model", "gpu_count",
                    "kv_capacity_tokens", "load_summary", "token_state")
    list_filter = ("status", "engine", "gpu_model")
    search_fields = ("name", "model_name", "gpu_model", "address")
    readonly_fields = ("status", "last_heartbeat_at", "last_load", "token_display", "created_at")
    actions = ["revoke_tokens"]
    inlines = [NodePolicyStateInline]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    class Media:
        js = ("saga/node_status_live.js",)
        css = {"all": ("saga/admin.css",)}
    fieldsets = (
        (None, {"fields": ("name", "engine", "address")}),
        ("Hardware (reported at registration)",
         {"fields": ("model_name", "gpu_model", "gpu_count", "kv_capacity_tokens")}),
        ("Live state", {"fields": ("status", "last_heartbeat_at", "last_load")}),
        ("Credentials", {"fields": ("token_display", "created_at")}),
    )

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
            request._saga_issued_secret = node.assign_new_token()  # type: ignore[attr-defined]
            node.save(update_fields=["token_prefix", "token_hash", "token_revoked_at"])
            record(actor=request.user, action="node.rotate_token", obj=node)
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
        for node in queryset.filter(token_revoked_at__isnull=True, token_prefix__isnull=False):
            node.revoke_token()
            record(actor=request.user, action="node.revoke_token", obj=node)
            count += 1
        self.message_user(request, f"Revoked {count} node token(s).", messages.SUCCESS)
