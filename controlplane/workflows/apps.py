from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "controlplane.workflows"
    label = "workflows"
