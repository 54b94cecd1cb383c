from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from controlplane.workflows.models import AgentTemplate, Call, ToolCall, Workflow


@admin.register(AgentTemplate)
class AgentTemplateAdmin(admin.ModelAdmin):
    list_display = ("name", "description", "aeg_updated_at", "created_at")
    search_fields = ("name", "description")
    readonly_fields = ("aeg_updated_at", "created_at")


class CallInline(admin.TabularInline):
    model = Call
    extra = 0
    can_delete = False
    fields = ("seq", "node", "prompt_tokens", "cached_tokens", "output_tokens", "queued_at",
              "first_token_at", "finished_at", "outcome", "finish_reason")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ToolCallInline(admin.TabularInline):
    model = ToolCall
    extra = 0
    can_delete = False
    fields = ("name", "after_call", "started_at", "ended_at", "expected_duration_s")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    """Workflows are created by agents through the API; the admin inspects them."""

    list_display = ("__str__", "tenant", "template", "state", "home_node", "submitted_at",
                    "tct_s", "slowdown_display", "slo_met")
    list_filter = ("state", "tenant", "template", "slo_met", "home_node")
    search_fields = ("external_id", "tenant__slug", "template__name")
    list_select_related = ("tenant", "template", "home_node")
    date_hierarchy = "submitted_at"
    readonly_fields = ("state", "submitted_at", "started_at", "state_changed_at", "finished_at",
                       "tct_s", "est_isolated_s", "slo_met")
    inlines = [CallInline, ToolCallInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # agents submit workflows (REST API, gateway); the admin inspects them

    @admin.display(description="Slowdown")
    def slowdown_display(self, obj: Workflow) -> str:
        return "-" if obj.slowdown is None else f"{obj.slowdown:.2f}x"


@admin.register(Call)
class CallAdmin(admin.ModelAdmin):
    list_display = ("__str__", "node", "prompt_tokens", "cached_tokens", "output_tokens",
                    "queued_at", "ttft_display", "latency_display", "outcome")
    list_filter = ("outcome", "node", "workflow__tenant")
    search_fields = ("workflow__external_id",)
    list_select_related = ("workflow", "node")
    raw_id_fields = ("workflow",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # calls are recorded by the gateway

    @admin.display(description="TTFT (s)")
    def ttft_display(self, obj: Call) -> str:
        return "-" if obj.ttft_s is None else f"{obj.ttft_s:.3f}"

    @admin.display(description="Latency (s)")
    def latency_display(self, obj: Call) -> str:
        return "-" if obj.latency_s is None else f"{obj.latency_s:.3f}"


@admin.register(ToolCall)
class ToolCallAdmin(admin.ModelAdmin):
    list_display = ("__str__", "name", "started_at", "ended_at", "duration_display")
    list_filter = ("name", "workflow__tenant")
    search_fields = ("name", "workflow__external_id")
    raw_id_fields = ("workflow", "after_call")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tool calls are recorded from agents' events

    @admin.display(description="Duration (s)")
    def duration_display(self, obj: ToolCall) -> str:
        return "-" if obj.duration_s is None else f"{obj.duration_s:.2f}"
