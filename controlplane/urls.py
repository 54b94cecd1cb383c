"""HTTP routes of the control plane."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from controlplane.api.api import api
from controlplane.health import healthz

admin.site.site_header = "SAGA administration"
admin.site.site_title = "SAGA"
admin.site.index_title = "Cluster, tenants and policies"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("v1/", include("controlplane.gateway.urls")),
    path("healthz", healthz, name="healthz"),
]
