from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from controlplane.admin_audit import AuditedModelAdmin
from controlplane.policies.catalogue import installed_policies
from controlplane.policies.models import Policy, PolicyActivation
from controlplane.policies.services import ActivationError, activate_policy, rollback


class PolicyForm(forms.ModelForm):
    plugin_name = forms.ChoiceField(choices=())

    class Meta:
        model = Policy
        fields = ("kind", "plugin_name", "params", "description")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = sorted({name for _kind, name in installed_policies()})
        self.fields["plugin_name"].choices = [(n, n) for n in names]  # type: ignore[attr-defined]
        self.fields["plugin_name"].help_text = "Installed policies: " + "; ".join(
            f"{kind}: {name}" for kind, name in sorted(installed_policies())
        )


@admin.register(Policy)
class PolicyAdmin(AuditedModelAdmin):
    """Policy configurations. Params are validated with the plugin's own schema on save.

    Adding and deleting (an unused configuration: activations protect theirs) are audited by
    AuditedModelAdmin, activation by ``activate_policy``; a saved configuration is immutable.
    """

    audit_name = "policy"
    audited_actions = ("activate_cluster_wide",)  # activate_policy writes policy.activate
    form = PolicyForm
    list_display = ("__str__", "kind", "plugin_name", "version", "plugin_version", "params",
                    "created_by", "created_at")
    list_filter = ("kind", "plugin_name")
    search_fields = ("plugin_name", "description")
    actions = ["activate_cluster_wide"]

    def save_model(self, request: HttpRequest, obj: Policy, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A configuration is immutable once saved: history must mean what it said at the time.
        return obj is None and super().has_change_permission(request, obj)

    @admin.action(description="Activate for the whole cluster", permissions=["activate"])
    def activate_cluster_wide(self, request: HttpRequest, queryset: Any) -> None:
        kinds = list(queryset.values_list("kind", flat=True))
        if len(kinds) != len(set(kinds)):
            self.message_user(request, "Select at most one policy per kind.", messages.ERROR)
            return
        for policy in queryset:
            activation = activate_policy(policy, actor=request.user, reason="admin action")
            self.message_user(request, f"Activated {activation.policy} for the cluster.",
                              messages.SUCCESS)

    def has_activate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("policies.add_policyactivation")


@admin.register(PolicyActivation)
class PolicyActivationAdmin(AuditedModelAdmin):
    """The activation history per kind; read-only, with a one-step rollback (``rollback``
    writes the policy.rollback AuditEvent)."""

    audit_name = "policyactivation"
    audited_actions = ("rollback_kinds",)
    list_display = ("activated_at", "kind", "policy", "actor", "is_rollback", "rollout",
                    "previous", "reason")
    list_filter = ("kind", "is_rollback", "rollout")
    search_fields = ("actor", "reason", "policy__plugin_name")
    list_select_related = ("policy", "previous__policy")
    actions = ["rollback_kinds"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_rollback_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("policies.add_policyactivation")

    @admin.action(description="Roll back these kinds to their previous policy",
                  permissions=["rollback"])
    def rollback_kinds(self, request: HttpRequest, queryset: Any) -> None:
        for kind in sorted({a.kind for a in queryset}):
            try:
                activation = rollback(kind, actor=request.user)
            except ActivationError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"Rolled back {kind} to {activation.policy}.",
                                  messages.SUCCESS)
