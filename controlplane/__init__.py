"""SAGA control plane: the Django project (data model, admin, APIs, Channels, Celery)."""
