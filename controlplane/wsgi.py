"""WSGI entry point, for management tooling only: serving goes through ``asgi.py``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings.dev")
application = get_wsgi_application()
