"""Origin checks for websockets.

Browsers always send ``Origin`` and attach cookies, so a browser socket from a foreign page must
be refused (channels' ``AllowedHostsOriginValidator``). Node agents are not browsers: they
authenticate with a bearer token that no foreign page can attach, and send no ``Origin``.
``BrowserOriginValidator`` therefore refuses a foreign ``Origin`` but lets a socket without one
through to the token check.
"""

from __future__ import annotations

from typing import Any

from channels.security.websocket import AllowedHostsOriginValidator, WebsocketDenier


class BrowserOriginValidator:
    """Refuse sockets whose Origin is foreign; let Origin-less (non-browser) clients through."""
    def __init__(self, application: Any) -> None:
        self.application = application
        self.validated = AllowedHostsOriginValidator(application)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        has_origin = any(name == b"origin" for name, _ in scope.get("headers", []))
        if has_origin:
            return await self.validated(scope, receive, send)
        if scope.get("type") != "websocket":
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)


def browser_socket(consumer_app: Any) -> Any:
    """Wrap a browser-facing consumer: session/user in scope, allowed origins only."""
    from channels.auth import AuthMiddlewareStack

    return AllowedHostsOriginValidator(AuthMiddlewareStack(consumer_app))


def node_socket(consumer_app: Any) -> Any:
    """Wrap a token-authenticated (non-browser) consumer: foreign origins refused."""
    return BrowserOriginValidator(consumer_app)
