from django.apps import AppConfig


class NodesConfig(AppConfig):
    name = "controlplane.nodes"
    label = "nodes"

    def ready(self) -> None:
        # Make the project's Celery app the current one in every Django process, so that
        # `.delay()` from the web process uses the configured broker (cookiecutter-django does
        # the same from the project package).
        from controlplane import celery  # noqa: F401
        from controlplane.nodes import signals  # noqa: F401  (connects the receivers)
