"""ASGI entry point: HTTP through Django, websockets through Channels.

Node agents connect to ``/ws/node/`` with a bearer token (no cookies, no Origin needed);
browsers connect to ``/ws/ui/...`` with their session, and only from allowed origins. Each route
carries its own wrapper (``controlplane.websocket_security``).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings.dev")
django_asgi_app = get_asgi_application()  # populates the app registry before consumers import

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from controlplane.nodes.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {"http": django_asgi_app, "websocket": URLRouter(websocket_urlpatterns)}
)
