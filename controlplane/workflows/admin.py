"""Workflows, their calls and tool calls are recorded telemetry: the admin shows them, read-only.

Only an agent template's name and description are editable (audited); its learned execution
graph statistics are written by the policy layer and shown as read-only JSON.
"""

from __future__ import annotations

from django.contrib import admin

from controlplane.admin_audit import AuditedModelAdmin, ReadOnlyAdminMixin, pretty_json
from controlplane.workflows.models import AgentTemplate, Call, ToolCall, Workflow


@admin.register(AgentTemplate)
class AgentTemplateAdmin(AuditedModelAdmin):
    """Name and description are the operator's (audited); the execution graph is learned."""

    audit_name = "agenttemplate"
    list_display = ("name", "description", "idle_timeout_s", "aeg_updated_at", "created_at")
    search_fields = ("name", "description")
    fields = ("name", "description", "idle_timeout_s", "aeg_stats_display", "aeg_updated_at",
              "created_at")
    readonly_fields = ("aeg_stats_display", "aeg_updated_at", "created_at")

    @admin.display(description="Execution graph statistics")
    def aeg_stats_display(self, obj: AgentTemplate) -> str:
        return pretty_json(obj.aeg_stats or {})


class CallInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Call
    extra = 0
    can_delete = False
    fields = ("seq", "node", "prompt_tokens", "cached_tokens", "output_tokens", "queued_at",
              "first_token_at", "finished_at", "outcome", "finish_reason")
    readonly_fields = fields


class ToolCallInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = ToolCall
    extra = 0
    can_delete = False
    fields = ("name", "after_call", "started_at", "ended_at", "expected_duration_s")
    readonly_fields = fields


@admin.register(Workflow)
class WorkflowAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Workflows are created by agents through the API and moved by the scheduler; the admin
    inspects them.

    Nothing is editable, and nothing can be added or deleted. Deleting is refused rather than
    audited: a workflow, its calls and tool calls are the record that tenants' SLO attainment,
    quotas and the learned execution graphs were computed from, and removing one from the admin
    would silently rewrite those figures (an audit event would say who did it, not restore what
    was lost). Because the delete permission is refused here, Django's admin also refuses to
    delete a tenant whose deletion would cascade to workflows.
    """

    list_display = ("__str__", "tenant", "template", "state", "home_node", "submitted_at",
                    "tct_s", "slowdown_display", "slo_status")
    list_filter = ("state", "tenant", "template", "slo_status", "home_node")
    search_fields = ("external_id", "tenant__slug", "template__name")
    list_select_related = ("tenant", "template", "home_node")
    date_hierarchy = "submitted_at"
    fields = ("tenant", "template", "external_id", "metadata_display", "hints_display", "state",
              "home_node", "submitted_at", "started_at", "state_changed_at", "finished_at",
              "tct_s", "est_isolated_s", "slowdown_display", "slo_status", "isolated_basis",
              "recompute_tokens", "aeg_learned")
    readonly_fields = fields
    inlines = [CallInline, ToolCallInline]

    @admin.display(description="Slowdown")
    def slowdown_display(self, obj: Workflow) -> str:
        return "-" if obj.slowdown is None else f"{obj.slowdown:.2f}x"

    @admin.display(description="Metadata")
    def metadata_display(self, obj: Workflow) -> str:
        return pretty_json(obj.metadata)

    @admin.display(description="Hints")
    def hints_display(self, obj: Workflow) -> str:
        return pretty_json(obj.hints)


@admin.register(Call)
class CallAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Calls are recorded by the gateway; read-only."""

    list_display = ("__str__", "node", "prompt_tokens", "cached_tokens", "output_tokens",
                    "queued_at", "ttft_display", "latency_display", "outcome")
    list_filter = ("outcome", "node", "workflow__tenant")
    search_fields = ("workflow__external_id",)
    list_select_related = ("workflow", "node")

    @admin.display(description="TTFT (s)")
    def ttft_display(self, obj: Call) -> str:
        return "-" if obj.ttft_s is None else f"{obj.ttft_s:.3f}"

    @admin.display(description="Latency (s)")
    def latency_display(self, obj: Call) -> str:
        return "-" if obj.latency_s is None else f"{obj.latency_s:.3f}"


@admin.register(ToolCall)
class ToolCallAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Tool calls are recorded from agents' events; read-only."""

    list_display = ("__str__", "name", "started_at", "ended_at", "duration_display")
    list_filter = ("name", "workflow__tenant")
    search_fields = ("name", "workflow__external_id")

    @admin.display(description="Duration (s)")
    def duration_display(self, obj: ToolCall) -> str:
        return "-" if obj.duration_s is None else f"{obj.duration_s:.2f}"
