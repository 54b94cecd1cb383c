"""The console's pages under ``/console/`` (staff only; anonymous users go to the login)."""

from django.urls import path

from controlplane.console.views import cluster, policies, templates, tenants, whatif, workflows

app_name = "console"

urlpatterns = [
    path("", cluster.cluster, name="cluster"),
    path("workflows/", workflows.workflow_list, name="workflows"),
    path("workflows/<int:workflow_id>/", workflows.workflow, name="workflow"),
    path("templates/", templates.template_list, name="templates"),
    path("templates/<str:name>/", templates.template, name="template"),
    path("tenants/", tenants.tenant_list, name="tenants"),
    path("tenants/new/", tenants.tenant_new, name="tenant_new"),
    path("tenants/<slug:slug>/", tenants.tenant, name="tenant"),
    path("tenants/<slug:slug>/keys/new/", tenants.key_new, name="key_new"),
    path("tenants/<slug:slug>/keys/<int:key_id>/revoke/", tenants.key_revoke,
         name="key_revoke"),
    path("policies/", policies.policies, name="policies"),
    path("policies/activate/", policies.activate, name="activate"),
    path("policies/activate/confirm/", policies.confirm_activation, name="confirm_activation"),
    path("policies/rollback/", policies.roll_back, name="rollback"),
    path("policies/activations/<int:activation_id>/", policies.activation, name="activation"),
    path("whatif/", whatif.whatif_list, name="whatif"),
    path("whatif/<int:run_id>/", whatif.whatif_run, name="whatif_run"),
    path("whatif/<int:run_id>/cancel/", whatif.whatif_cancel, name="whatif_cancel"),
    path("whatif/<int:run_id>/report/", whatif.whatif_report, name="whatif_report"),
]
