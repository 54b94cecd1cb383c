"""HTTP routes of the control plane."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from controlplane.api.api import api
from controlplane.health import healthz
from controlplane.metrics import metrics

admin.site.site_header = "SAGA administration"
admin.site.site_title = "SAGA"
admin.site.index_title = "Cluster, tenants and policies"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="console:cluster", permanent=False)),
    path("console/", include("controlplane.console.urls")),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
]
