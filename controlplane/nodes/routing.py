"""Websocket URL routes of the nodes app, each wrapped for who connects to it."""

from django.urls import path

from controlplane.nodes.consumers import ClusterEventsConsumer, NodeAgentConsumer
from controlplane.websocket_security import browser_socket, node_socket

websocket_urlpatterns = [
    path("ws/node/", node_socket(NodeAgentConsumer.as_asgi())),
    path("ws/ui/cluster/", browser_socket(ClusterEventsConsumer.as_asgi())),
]
