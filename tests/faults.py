"""Fault injection for end-to-end tests: a private Redis server that can be restarted (losing
its data, as a real restart does), a TCP proxy that cuts a store off and lets it back, and a
control plane served in a subprocess that can be killed."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.live import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]


class PrivateRedis:
    """``redis-server`` on its own port, nothing persisted."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed for this test"
        self._proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tempfile.gettempdir()],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, "the private Redis to answer", 10)
        return self

    def _answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(10)
            self._proc = None


class TcpProxy:
    """Forwards a local port to ``target``; ``cut()`` drops every connection and refuses new
    ones (the store is down), ``restore()`` accepts again."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target = ("127.0.0.1", target_port)
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def restore(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


class ServedControlPlane:
    """``saga serve`` in a subprocess (test settings), on a fixed port across restarts."""

    def __init__(self, database_url: str, redis_url: str, node_key: str,
                 workers: int = 1) -> None:
        self.port = free_port()
        self.workers = workers
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "DJANGO_SETTINGS_MODULE": "controlplane.settings.test",
                    "DATABASE_URL": database_url, "REDIS_URL": redis_url,
                    "SAGA_NODE_API_KEY": node_key, "LOG_LEVEL": "WARNING"}
        self._proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix="saga-cp-", suffix=".log")[1])

    def start(self) -> ServedControlPlane:
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "controlplane.cli", "serve", "--port", str(self.port),
                 "--workers", str(self.workers), "--graceful-timeout", "2"],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        wait_for(self._answers, f"the control plane to serve (log: {self.log})", 60)
        return self

    def _answers(self) -> bool:
        import httpx

        assert self._proc is not None and self._proc.poll() is None, self.log.read_text()
        try:
            return httpx.get(f"{self.url}/v1/models", timeout=1).status_code == 401
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, as when the machine dies."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(10)
            self._proc = None

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
            self._proc = None


def database_url_of_test_db(port: int | None = None) -> str:
    """The URL of the database pytest-django created (``test_<name>``), optionally through a
    proxy on ``port``."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    host_port = port or db.get("PORT") or 5432
    user = db.get("USER") or "postgres"
    return f"postgres://{user}@127.0.0.1:{host_port}/{db['NAME']}"


def wait_until(condition: object, what: str, timeout: float = 30.0) -> float:
    """wait_for that returns the seconds it took."""
    start = time.monotonic()
    wait_for(condition, what, timeout)
    return time.monotonic() - start


class NodeAgentProcess:
    """``saga node --engine sim`` in a subprocess, so a test can SIGKILL it mid-call."""

    def __init__(self, control_plane: str, name: str, *, api_key: str, model: str,
                 speed: float = 10.0) -> None:
        from controlplane.nodes.models import Node

        node = Node(name=name)
        self.token = node.assign_new_token()
        node.save()
        self.name = name
        self.port = free_port()
        self.log = Path(tempfile.mkstemp(prefix=f"saga-{name}-", suffix=".log")[1])
        self.argv = [sys.executable, "-m", "controlplane.cli", "node", "--engine", "sim",
                     "--control-plane", control_plane, "--token", self.token, "--model", model,
                     "--speed", str(speed), "--port", str(self.port), "--api-key", api_key,
                     "--log-level", "WARNING"]
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> NodeAgentProcess:
        from controlplane.nodes.models import Node, NodeStatus

        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=out,
                                          stderr=subprocess.STDOUT)
        wait_for(lambda: Node.objects.filter(name=self.name, status=NodeStatus.UP)
                 .exclude(address="").exists(), f"node {self.name} to register ({self.log})", 60)
        return self

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(10)
            self._proc = None

    stop = kill
