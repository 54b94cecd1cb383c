"""The cluster under test: ``saga serve`` and one ``saga node --engine sim`` as child processes
on loopback, plus the tenant, API key and node rows they need (created through Django's ORM in
this process, deleted again afterwards).

Children run in their own sessions so a Ctrl-C reaches only the benchmark, which then stops them
itself (SIGTERM, then SIGKILL) and removes what it created.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from controlplane.gatewaybench.stats import CONTROL_PLANE, NODE

DEFAULT_SETTINGS = "controlplane.settings.dev"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
SIM_PROFILE = "h100-llama3-8b"


class ClusterError(RuntimeError):
    """A child process failed to start or died; the message names it and its log file."""


@dataclass(frozen=True, slots=True)
class Backends:
    """Where state lives: PostgreSQL/Redis URLs, or None for SQLite and in-memory state."""

    database_url: str | None
    redis_url: str | None

    def describe(self) -> str:
        database = _redact(self.database_url) if self.database_url else "SQLite (temporary file)"
        redis = _redact(self.redis_url) if self.redis_url else "in-memory (no Redis)"
        return f"database {database}; routing state and quotas {redis}"


def _redact(url: str) -> str:
    """The URL without a password, for printing."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}{sep}{user}@{host}"
    return url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def session_cpu_seconds(sid: int, proc: Path = Path("/proc")) -> float | None:
    """Sum of utime + stime over the processes of session ``sid`` (Linux /proc)."""
    if not proc.is_dir():
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in proc.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the process ended meanwhile
        fields = text[text.rfind(")") + 2:].split()
        # After "pid (comm) ": state ppid pgrp session ... utime is field 14, stime 15 of stat.
        if int(fields[3]) == sid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


@dataclass(slots=True)
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise ClusterError(f"{self.name} exited with status {code}: {self.log_tail()}")

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) of every process in the child's session: uvicorn's workers
        included. None where /proc is not there to read (not Linux)."""
        return session_cpu_seconds(self.process.pid)

    def log_tail(self, lines: int = 5) -> str:
        self.log.flush()
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or f"(no output; log {self.log_path})"

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(STOP_TIMEOUT_S)
        self.log.close()


@dataclass(slots=True)
class Cluster:
    """A running control plane and node, and the secrets to call them."""

    backends: Backends
    gateway_url: str = ""
    node_url: str = ""
    model: str = ""
    node_name: str = ""
    tenant_key: str = ""
    tenant_slug: str = ""
    node_api_key: str = ""
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="saga-gwbench-")))
    children: list[Child] = field(default_factory=list)
    _tenant_pk: int | None = None
    _node_pk: int | None = None

    # ------------------------------------------------------------------ environment
    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("DJANGO_SETTINGS_MODULE", DEFAULT_SETTINGS)
        env["DEBUG"] = "false"  # DEBUG keeps every SQL query in memory: not what production runs
        env["LOG_LEVEL"] = "WARNING"
        env["SAGA_STATE_DIR"] = str(self.workdir)
        env["SAGA_NODE_API_KEY"] = self.node_api_key
        for name, value in (("DATABASE_URL", self.backends.database_url),
                            ("REDIS_URL", self.backends.redis_url)):
            if value:
                env[name] = value
            else:
                env.pop(name, None)
        return env

    def _setup_django(self) -> None:
        os.environ.update(self.child_env())
        for name, value in (("DATABASE_URL", self.backends.database_url),
                            ("REDIS_URL", self.backends.redis_url)):
            if not value:
                os.environ.pop(name, None)
        import django

        django.setup()

    # ------------------------------------------------------------------ lifecycle
    def start(self, speed: float, say: Callable[[str], None], workers: int = 1) -> None:
        """Migrate, create tenant/key/node, start both processes, wait until the node is UP."""
        self.node_api_key = secrets.token_urlsafe(24)
        self._setup_django()
        from django.core.management import call_command
        from django.db import DatabaseError

        self._check_services()
        say("migrating the database")
        try:
            call_command("migrate", interactive=False, verbosity=0)
            token = self._create_rows()
        except DatabaseError as exc:
            raise ClusterError(f"database unusable: {str(exc).strip().splitlines()[0]}") from exc
        cp_port, node_port = free_port(), free_port()
        self.gateway_url = f"http://127.0.0.1:{cp_port}"
        self.node_url = f"http://127.0.0.1:{node_port}"
        say(f"starting the control plane on {self.gateway_url} ({workers} worker(s))")
        control_plane = self._spawn(CONTROL_PLANE, ["serve", "--host", "127.0.0.1",
                                                      "--port", str(cp_port),
                                                      "--workers", str(workers)])
        self._wait(f"{self.gateway_url}/healthz", control_plane)
        say(f"starting a simulated node on {self.node_url} (speed x{speed:g})")
        node = self._spawn(NODE, [
            "node", "--engine", "sim", "--control-plane", self.gateway_url, "--token", token,
            "--model", self.model, "--profile", SIM_PROFILE, "--speed", repr(speed),
            "--host", "127.0.0.1", "--port", str(node_port), "--api-key", self.node_api_key,
            "--log-level", "WARNING"])
        self._wait_registered(node)

    def _check_services(self) -> None:
        """Fail in seconds, with one line, when PostgreSQL or Redis is not there."""
        if self.backends.database_url:
            import psycopg

            try:
                psycopg.connect(self.backends.database_url, connect_timeout=3).close()
            except psycopg.Error as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise ClusterError(f"PostgreSQL at {_redact(self.backends.database_url)} is "
                                   f"unreachable: {first}") from exc
        if not self.backends.redis_url:
            return
        import redis

        try:
            redis.Redis.from_url(self.backends.redis_url, socket_connect_timeout=3).ping()
        except redis.RedisError as exc:
            raise ClusterError(f"Redis at {_redact(self.backends.redis_url)} does not answer: "
                               f"{exc}") from exc

    def _create_rows(self) -> str:
        from controlplane.nodes.models import Node
        from controlplane.tenants.models import ApiKey, Tenant

        run_id = secrets.token_hex(4)
        # A model name of its own: the gateway can route only to this run's node.
        self.model = f"gwbench-{run_id}"
        # A token budget far above what the run uses, so the quota check runs on every call
        # (an unlimited tenant would skip it) without ever refusing one.
        tenant = Tenant.objects.create(slug=f"gwbench-{run_id}", name="Gateway benchmark",
                                       tokens_per_minute=10**15)
        _key, self.tenant_key = ApiKey.issue(tenant, "gateway benchmark", scopes=["inference"])
        self.tenant_slug = tenant.slug
        self.node_name = f"gwbench-{run_id}"
        node = Node(name=self.node_name)
        token = node.assign_new_token()
        node.save()
        self._tenant_pk, self._node_pk = tenant.pk, node.pk
        return token

    def _spawn(self, name: str, argv: list[str]) -> Child:
        log_path = self.workdir / f"{name.replace(' ', '-')}.log"
        log = log_path.open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "controlplane.cli", *argv], env=self.child_env(),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        child = Child(name, process, log_path, log)
        self.children.append(child)
        return child

    def _wait(self, url: str, child: Child) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            child.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise ClusterError(f"{child.name} did not answer {url} in {START_TIMEOUT_S:g} s: "
                           f"{child.log_tail()}")

    def _wait_registered(self, node: Child) -> None:
        from controlplane.nodes.models import Node, NodeStatus

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for child in self.children:
                child.check_alive()
            if Node.objects.filter(pk=self._node_pk, status=NodeStatus.UP).exclude(
                    address="").exists():
                return
            time.sleep(0.1)
        raise ClusterError(f"the node did not register in {START_TIMEOUT_S:g} s: "
                           f"{node.log_tail()}")

    def process_of(self, name: str) -> int:
        """The pid of the child called ``name`` (a profiler attaches to it)."""
        for child in self.children:
            if child.name == name:
                return child.process.pid
        raise ClusterError(f"no {name} process is running")

    def cpu_seconds(self) -> dict[str, float | None]:
        """CPU seconds used so far by each child, by name."""
        return {child.name: child.cpu_seconds() for child in self.children}

    def stop(self) -> None:
        """Stop the children (node first), then delete this run's rows; safe to call twice."""
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        self._delete_rows()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _delete_rows(self) -> None:
        if self._tenant_pk is None and self._node_pk is None:
            return
        from django.db import connection

        from controlplane.nodes.models import Node
        from controlplane.tenants.models import Tenant
        from controlplane.workflows.models import Workflow

        Workflow.objects.filter(tenant_id=self._tenant_pk).delete()
        Tenant.objects.filter(pk=self._tenant_pk).delete()
        Node.objects.filter(pk=self._node_pk).delete()
        self._tenant_pk = self._node_pk = None
        if self.backends.redis_url:
            import redis

            redis.Redis.from_url(self.backends.redis_url).delete(
                f"saga:inflight:{self.node_name}", f"saga:inflight:{self.node_name}:tokens")
        connection.close()
