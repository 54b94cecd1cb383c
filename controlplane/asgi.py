"""ASGI entry point: the gateway (``/v1/``) on its own raw path, other HTTP through Django,
websockets through Channels, and the lifespan of this process's gateway.

Node agents connect to ``/ws/node/`` with a bearer token (no cookies, no Origin needed);
browsers connect to ``/ws/ui/...`` with their session, and only from allowed origins. Each route
carries its own wrapper (``controlplane.websocket_security``). ``/v1/`` bypasses Django's
request handling (``controlplane.gateway.app`` says why). At start-up the process begins its
gateway housekeeping (which first reconciles calls left open by processes that died); at shutdown
it closes the calls it still holds.
"""

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings.dev")
django_asgi_app = get_asgi_application()  # populates the app registry before consumers import

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from controlplane.console.routing import websocket_urlpatterns as console_websockets  # noqa: E402
from controlplane.gateway import app as gateway  # noqa: E402
from controlplane.gateway import runtime  # noqa: E402
from controlplane.nodes.routing import websocket_urlpatterns  # noqa: E402
from controlplane.slo.routing import websocket_urlpatterns as slo_websockets  # noqa: E402


async def http(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["path"].startswith(gateway.PREFIX):
        await gateway.application(scope, receive, send)
    else:
        await django_asgi_app(scope, receive, send)


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            runtime.process.start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await runtime.shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


application = ProtocolTypeRouter(
    {"http": http,
     "websocket": URLRouter([*websocket_urlpatterns, *slo_websockets, *console_websockets]),
     "lifespan": lifespan}
)
