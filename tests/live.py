"""A live cluster for end-to-end tests: the control plane and node agents served for real on
loopback ports (uvicorn, Channels over Redis, PostgreSQL), each in its own thread and loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from controlplane.nodes.models import Node, NodeStatus

STOP_GRACE_S = 5
"""A test server stops within this even with connections still open (a node's websocket):
one that lingered kept its gateway housekeeping querying the test database after its test,
where it can deadlock with the next test's flush."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def serve_control_plane() -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config("controlplane.asgi:application",
                                           host="127.0.0.1", port=port, lifespan="on",
                                           log_level="warning",
                                           timeout_graceful_shutdown=STOP_GRACE_S))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, "the control plane to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class NodeProcess:
    """A node agent (sim engine) running in a thread with its own event loop."""

    def __init__(self, control_plane: str, name: str, *, api_key: str | None,
                 model: str = "llama-3-8b", speed: float = 200.0) -> None:
        from nodeagent.agent.sim_backend import SimBackend

        node = Node(name=name)
        self.token = node.assign_new_token()
        node.save()
        self.name = name
        self.port = free_port()
        self.engine = SimBackend("h100-llama3-8b", model_name=model, node_id=name, speed=speed)
        self._control_plane = control_plane
        self._api_key = api_key
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from nodeagent.agent.cli import serve_node

        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(serve_node(
            self.engine, control_plane=self._control_plane, token=self.token,
            host="127.0.0.1", port=self.port, api_key=self._api_key, log_level="warning"))
        with contextlib.suppress(asyncio.CancelledError):  # stopped by the test
            self._loop.run_until_complete(self._task)

    def start(self) -> NodeProcess:
        self._thread.start()
        wait_for(lambda: Node.objects.filter(name=self.name, status=NodeStatus.UP)
                 .exclude(address="").exists(), f"node {self.name} to register")
        return self

    def stop(self) -> None:
        if self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout=10)
