"""Websocket route of the SLO series (``controlplane.slo.consumers``)."""

from django.urls import path

from controlplane.slo.consumers import SloSeriesConsumer
from controlplane.websocket_security import node_socket


def _with_session(consumer_app: object) -> object:
    """Session and user in scope for browsers; bearer-key clients send no Origin and no
    cookie, and foreign origins are refused (``node_socket``)."""
    from channels.auth import AuthMiddlewareStack

    return node_socket(AuthMiddlewareStack(consumer_app))


websocket_urlpatterns = [path("ws/slo/", _with_session(SloSeriesConsumer.as_asgi()))]
