"""Helpers for tests that talk to the Channels consumers through ``WebsocketCommunicator``."""

from __future__ import annotations

from channels.testing import WebsocketCommunicator


async def refused(comm: WebsocketCommunicator) -> bool:
    """Whether the socket was refused; the consumer is then ended within the test, as a client's
    disconnect ends it (left running, the loop's teardown cancelled its dispatch and its
    channel-layer receive at once, which could hang the suite)."""
    connected, _ = await comm.connect()
    await comm.disconnect()
    return not connected
