"""Where the control plane's CPU goes during ``saga bench-gateway --profile``.

py-spy samples the ``saga serve`` process (and its workers) from outside while the measured
levels run, counting only samples that hold the GIL: the control plane's Python CPU, not its
waits on PostgreSQL, Redis or the node. Each sample is put in the first category its stack
meets from the innermost frame outwards (a psycopg frame under the admission counts as
admission), so the shares add up to 100% and say which part of a call to work on next.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO

SAMPLE_RATE_HZ = 250

CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("routing decision (policy layer)", ("_route (controlplane/gateway/calls.py",)),
    ("Redis: in-flight leases, quota", ("controlplane/gateway/routing_state.py",
                                        "controlplane/gateway/resp.py")),
    ("what-if prompt structures", ("controlplane/whatif/recording.py",)),
    ("outcome group commit (PostgreSQL)", ("GroupCommit.", "_commit_batch (controlplane")),
    ("new workflow (ORM, quota, template)", ("_admit_workflow (controlplane",)),
    ("admission (PostgreSQL)", ("controlplane/gateway/ledger.py",)),
    ("request to the node, relay of its answer", ("controlplane/gateway/nodeclient.py",
                                                  "controlplane/gateway/upstream.py",
                                                  "Call._relay", "Call._whole")),
    ("HTTP serving, auth, validation", ("uvicorn/protocols/", "uvicorn/middleware/",
                                        "uvicorn/logging.py", "controlplane/gateway/exchange.py",
                                        "controlplane/gateway/app.py",
                                        "controlplane/gateway/keys.py",
                                        "controlplane/gateway/validation.py", "h11", "httptools")),
)
FALLBACKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # py-spy cannot always unwind a resumed coroutine to its callers: such a stack holds the
    # client library's frames only.
    ("PostgreSQL client, caller not sampled", ("psycopg/", "psycopg_pool/")),
    ("Redis client, caller not sampled", ("redis/",)),
)
OTHER = "event loop, housekeeping, other"


class ProfileError(RuntimeError):
    """py-spy is missing or could not attach; the message says which."""


def py_spy() -> str:
    """The py-spy executable: next to this interpreter (the venv) or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.is_file() else shutil.which("py-spy")
    if not found:
        raise ProfileError("--profile needs py-spy (pip install py-spy)")
    return found


@dataclass
class Recorder:
    """py-spy recording one process tree into a collapsed-stack file until ``stop``."""

    pid: int
    out: Path
    process: subprocess.Popen[bytes] | None = None
    errors: IO[bytes] | None = None
    """py-spy's messages, in a file: a pipe nobody reads during a long run could fill and stall
    it."""

    def start(self) -> None:
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop)
        self.process = subprocess.Popen(
            [py_spy(), "record", "--pid", str(self.pid), "--gil", "--subprocesses",
             "--nonblocking", "--rate", str(SAMPLE_RATE_HZ), "--format", "raw",
             "--output", str(self.out)],
            stdout=subprocess.DEVNULL, stderr=self.errors)

    def stop(self) -> None:
        """Stop sampling and wait for the file; raises ProfileError when py-spy failed."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise ProfileError("py-spy did not stop within 30 s") from None
        err = b""
        if self.errors is not None:
            self.errors.seek(0)
            err = self.errors.read()
            self.errors.close()
        if not self.out.is_file():
            last = err.decode(errors="replace").strip().splitlines()
            raise ProfileError(f"py-spy wrote no profile: {last[-1] if last else 'no output'}")


def category_of(stack: str) -> str:
    """The category of one collapsed stack (frames root first, ``;``-separated): the first
    ``CATEGORIES`` entry met from the innermost frame out, else the first ``FALLBACKS`` one."""
    frames = stack.split(";")
    for categories in (CATEGORIES, FALLBACKS):
        for frame in reversed(frames):
            for name, needles in categories:
                if any(needle in frame for needle in needles):
                    return name
    return OTHER


def breakdown(collapsed: str) -> dict[str, float]:
    """Each category's share of the samples (0..1), largest first; {} for no samples."""
    counts: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            counts[category_of(stack)] += int(count)
    total = sum(counts.values())
    return {name: n / total for name, n in counts.most_common()} if total else {}
