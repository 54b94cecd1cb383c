from django.apps import AppConfig


class SloConfig(AppConfig):
    name = "controlplane.slo"
    label = "slo"
    verbose_name = "SLO accounting"
