"""The Celery application: tasks are autodiscovered from the Django apps, periodic ones are
scheduled by celery beat from the database (django-celery-beat), seeded from
``CELERY_BEAT_SCHEDULE`` so that admins can retune them in the admin without a deploy."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings.dev")

app = Celery("controlplane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
