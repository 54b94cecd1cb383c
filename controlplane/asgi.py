"""ASGI entry point: HTTP through Django, websockets through Channels.

Node agents connect to ``/ws/node/`` with a bearer token (no cookies, no Origin needed);
browsers connect to ``/ws/ui/...`` with their session, and only from allowed origins.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings.dev")
django_asgi_app = get_asgi_application()  # populates the app registry before consumers import

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from controlplane.nodes.routing import browser_urlpatterns, node_agent_urlpatterns  # noqa: E402

websocket_application = URLRouter(
    [
        *node_agent_urlpatterns,
        path(
            "ws/ui/",
            AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(browser_urlpatterns))),
        ),
    ]
)

application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": websocket_application})
