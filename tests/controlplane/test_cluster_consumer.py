"""The browser's live cluster socket: staff only, same-origin only, fed by node heartbeats."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

from controlplane.asgi import application
from controlplane.nodes.consumers import CLUSTER_GROUP
from tests.sockets import refused

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@database_sync_to_async
def session_cookie(is_staff: bool) -> bytes:
    user = get_user_model().objects.create_user(
        username=f"user-{is_staff}", password="pw-123456789", is_staff=is_staff
    )
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def browser(cookie: bytes | None, origin: str = "http://127.0.0.1:8000") -> WebsocketCommunicator:
    headers = [(b"origin", origin.encode()), (b"host", b"127.0.0.1:8000")]
    if cookie:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, "/ws/ui/cluster/", headers=headers)


async def test_anonymous_and_non_staff_users_are_refused(redis_url: str) -> None:
    assert await refused(browser(None))
    assert await refused(browser(await session_cookie(is_staff=False)))


async def test_a_foreign_origin_is_refused(redis_url: str) -> None:
    cookie = await session_cookie(is_staff=True)
    assert await refused(browser(cookie, origin="https://evil.example"))


async def test_staff_receive_node_status_events(redis_url: str) -> None:
    comm = browser(await session_cookie(is_staff=True))
    assert (await comm.connect())[0]
    event = {"type": "node.status", "node": "gpu-1", "status": "up",
             "last_heartbeat_at": None, "load": {"running": 2}}
    await get_channel_layer().group_send(CLUSTER_GROUP, event)
    assert await comm.receive_json_from(timeout=5) == event
    await comm.disconnect()
