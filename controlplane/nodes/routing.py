"""Websocket URL routes of the nodes app.

Node-agent routes carry their own origin check (token-authenticated, see
``websocket_security``); browser routes are mounted under ``ws/ui/`` by ``asgi.py`` behind the
session and origin middleware.
"""

from django.urls import path

from controlplane.nodes.consumers import ClusterEventsConsumer, NodeAgentConsumer
from controlplane.websocket_security import BrowserOriginValidator

node_agent_urlpatterns = [path("ws/node/", BrowserOriginValidator(NodeAgentConsumer.as_asgi()))]
browser_urlpatterns = [path("cluster/", ClusterEventsConsumer.as_asgi())]
