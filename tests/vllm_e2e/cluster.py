"""A live cluster around a real vLLM engine for the end-to-end tests: the control plane (served
in this process), ``saga node --engine vllm`` on the tiny random-weight model in a subprocess,
and a simulated node; plus a third-party policy package whose admission hook raises, installed
the way a user installs one (a distribution with a ``saga.policies`` entry point on the path).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
NODE_KEY = "vllm-e2e-node-key"
TINY = "tiny-random"
"""The name clients use for the vLLM node's model (``--served-model-name``)."""
KV_BYTES = 4096 * 512
"""4,096 tokens of KV cache for the tiny model (512 bytes a token): small enough that a
competing workload evicts a workflow's cached prefix under LRU."""
START_TIMEOUT_S = 420.0

FAULTY_MODULE = '''
"""A third-party SAGA policy whose admission hook always raises (end-to-end tests)."""
from plugins.hookspecs import hookimpl
from plugins.policies.admission import PriorityAdmission


class FaultyAdmission(PriorityAdmission):
    name = "e2e-faulty"
    summary = "test: raises in saga_admission_order"

    @hookimpl
    def saga_admission_order(self, ctx, node, waiting, priorities):
        raise RuntimeError("e2e admission bug")
'''


def install_faulty_plugin(folder: Path) -> Path:
    """Write the package and its dist-info (entry point ``saga.policies``) into ``folder``;
    processes with ``folder`` on their path discover it like any installed plugin."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "saga_e2e_faulty.py").write_text(FAULTY_MODULE)
    info = folder / "saga_e2e_faulty-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: saga-e2e-faulty\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text("[saga.policies]\nfaulty = saga_e2e_faulty\n")
    return folder


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VllmNode:
    """``saga node --engine vllm`` in a subprocess (its engine core a process of its own)."""

    def __init__(self, control_plane: str, name: str, model_dir: Path, plugin_dir: Path,
                 engine_restarts: int = 2) -> None:
        from controlplane.nodes.models import Node

        node = Node(name=name)
        self.token = node.assign_new_token()
        node.save()
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix=f"saga-{name}-", suffix=".log")[1])
        self.argv = [sys.executable, "-m", "controlplane.cli", "node", "--engine", "vllm",
                     "--control-plane", control_plane, "--token", self.token,
                     "--model", str(model_dir), "--served-model-name", TINY,
                     "--tool-call-parser", "hermes", "--max-model-len", "2048",
                     "--kv-cache-memory-bytes", str(KV_BYTES), "--max-num-seqs", "4",
                     "--engine-restarts", str(engine_restarts), "--port", str(self.port),
                     "--api-key", NODE_KEY, "--log-level", "WARNING"]
        self.env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "HF_HUB_OFFLINE": "1",
                    "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(ROOT)])}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> VllmNode:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_up("to register")
        return self

    def wait_up(self, what: str, timeout: float = START_TIMEOUT_S) -> None:
        from controlplane.nodes.models import Node, NodeStatus

        deadline = time.monotonic() + timeout
        while not (Node.objects.filter(name=self.name, status=NodeStatus.UP)
                   .exclude(address="").exists() and self.health().get("status") == "ok"):
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"node {self.name} exited with {self.process.returncode}"
                                     f" waiting {what}: {self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"node {self.name} not up {what} after {timeout:g} s: "
                                     f"{self.tail()}")
            time.sleep(0.5)

    def health(self) -> dict[str, Any]:
        try:
            return dict(httpx.get(f"{self.url}/health", timeout=5).json())
        except (httpx.HTTPError, json.JSONDecodeError):
            return {}

    def scheduler(self) -> dict[str, Any]:
        """What the scheduler in the engine core said about itself (refreshed each heartbeat)."""
        return dict(self.health().get("scheduler") or {})

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def kill_engine_core(self, pid: int | None = None) -> int:
        """SIGKILL the engine-core process (``pid``, by default the one its scheduler
        reports)."""
        pid = int(self.scheduler()["pid"]) if pid is None else pid
        assert self.process is not None and pid != self.process.pid
        os.kill(pid, signal.SIGKILL)
        return pid

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
