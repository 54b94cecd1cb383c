"""Start an engine whose failures happen in other processes, and report them in one line.

vLLM builds its engine core in a spawned process (and that one spawns a worker). When start-up
fails there (a kernel that refuses the model, too little KV memory, a config vLLM rejects),
those processes print their own tracebacks to the standard streams they inherited, and the
node agent's process gets only ``RuntimeError("Engine core initialization failed. See root
cause above...")``. ``saga node`` must instead exit with status 2 and one line naming the
problem.

:class:`CapturedStartup` points file descriptors 1 and 2 at pipes for the duration of the
start: every process spawned meanwhile inherits them. A thread drains each pipe into a log file
and a bounded buffer. When the start succeeds, the buffered output is written to the real
streams and from then on each pipe is forwarded as it comes (the engine keeps logging through
them). When it fails, nothing is shown; :func:`root_cause` picks the last exception line out of
the captured output for the one-line message, and the log file keeps the rest.

No vLLM import here: this module is tested without it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

MAX_BUFFERED_LINES = 20_000
_COLOUR = r"(?:\x1b\[[0-9;]*m)*"
_PREFIX = re.compile(rf"^{_COLOUR}\([A-Za-z_][A-Za-z0-9_ -]* pid=\d+\){_COLOUR}\s?")
"""vLLM prefixes the lines its child processes print with ``(EngineCore pid=N)``."""
_LOG_PREFIX = re.compile(
    r"^(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) \d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \[[^\]]*\] ")
"""...and the lines its logger writes with ``ERROR 12-02 05:40:03 [file.py:1063]``."""
_EXCEPTION = re.compile(
    r"^(?P<type>(?:[A-Za-z_][A-Za-z0-9_]*\.)*[A-Za-z_][A-Za-z0-9_]*(?:Error|Exception|Exit))"
    r"(?::\s?(?P<message>.*))?$")
_WRAPPERS = ("Engine core initialization failed", "EngineCore failed to start",
             "See root cause above", "Worker failed with error", "WorkerProc failed to start")
"""Messages of exceptions that only say another process failed: never the root cause."""


def strip_prefix(line: str) -> str:
    """A captured line without vLLM's process and logger prefixes."""
    return _LOG_PREFIX.sub("", _PREFIX.sub("", line.rstrip("\r\n")))


def root_cause(lines: Iterable[str]) -> str | None:
    """``Type: message`` of the most relevant exception in captured output: the last one that
    is not a wrapper ("engine core initialization failed"), else the last one; None if none."""
    found: list[tuple[str, str]] = []
    for raw in lines:
        line = strip_prefix(raw).strip()
        match = _EXCEPTION.match(line)
        if match is None:
            continue
        found.append((match.group("type"), (match.group("message") or "").strip()))
    if not found:
        return None
    real = [f for f in found if not any(w in f[1] for w in _WRAPPERS)]
    kind, message = (real or found)[-1]
    short = kind.rsplit(".", 1)[-1]
    return f"{short}: {message}" if message else short


def one_line(exc: BaseException) -> str:
    """An exception raised in this process, as one line (pydantic and vLLM messages span
    several: keep the first that says something)."""
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    errors = getattr(exc, "errors", None)
    if callable(errors):  # pydantic.ValidationError: "field: message"
        with contextlib.suppress(Exception):
            first = errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            message = str(first.get("msg", lines[0]))
            return f"{where}: {message}" if where else message
    return lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"


class _Drain(threading.Thread):
    """Reads one pipe until EOF: into the log and the buffer, or to ``target`` once forwarding."""

    def __init__(self, read_fd: int, target_fd: int, log: BinaryIO, lock: threading.Lock,
                 buffer: deque[str]) -> None:
        super().__init__(daemon=True, name=f"engine-output-{target_fd}")
        self.read_fd = read_fd
        self.target_fd = target_fd
        self.log = log
        self.lock = lock
        self.buffer = buffer
        self.forwarding = False
        self.pending: list[bytes] = []

    def run(self) -> None:
        with open(self.read_fd, "rb", buffering=0) as pipe:
            partial = b""
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                with self.lock:
                    if self.forwarding:
                        _write_all(self.target_fd, chunk)
                        continue
                    self.pending.append(chunk)
                    with contextlib.suppress(OSError, ValueError):
                        self.log.write(chunk)
                        self.log.flush()
                    partial += chunk
                    *complete, partial = partial.split(b"\n")
                    self.buffer.extend(c.decode("utf-8", "replace") for c in complete)
            if partial:
                with self.lock:
                    self.buffer.append(partial.decode("utf-8", "replace"))

    def forward(self) -> None:
        """Write what was held back, then pass everything through."""
        with self.lock:
            for chunk in self.pending:
                _write_all(self.target_fd, chunk)
            self.pending.clear()
            self.forwarding = True


def _write_all(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]


class CapturedStartup:
    """``with CapturedStartup() as capture: build()``; then ``capture.succeeded()`` or
    ``capture.failed()`` (the context manager calls ``failed`` itself on an exception)."""

    def __init__(self, log_dir: str | None = None) -> None:
        self._log_dir = log_dir
        self.log_path: Path | None = None
        self.lines: deque[str] = deque(maxlen=MAX_BUFFERED_LINES)
        self._drains: list[_Drain] = []
        self._saved: dict[int, int] = {}
        self._log: BinaryIO | None = None
        self._done = False

    def __enter__(self) -> CapturedStartup:
        fd, name = tempfile.mkstemp(prefix="saga-engine-start-", suffix=".log", dir=self._log_dir)
        self.log_path = Path(name)
        self._log = open(fd, "wb")  # noqa: SIM115 (closed in _restore)
        lock = threading.Lock()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for target in (1, 2):
            read_fd, write_fd = os.pipe()
            self._saved[target] = os.dup(target)
            os.dup2(write_fd, target)
            os.close(write_fd)
            drain = _Drain(read_fd, self._saved[target], self._log, lock, self.lines)
            drain.start()
            self._drains.append(drain)
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._done:
            if exc_type is None:
                self.succeeded()
            else:
                self.failed()

    def _restore(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for target, saved in self._saved.items():
            # Our end of the pipe closes here; children keep theirs, and the drain forwards
            # their output (or keeps it in the log) until they exit.
            os.dup2(saved, target)
        self._done = True

    def succeeded(self) -> None:
        """The engine is up: show what it printed and keep forwarding its output."""
        if self._done:
            return
        self._restore()
        for drain in self._drains:
            drain.forward()
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            with contextlib.suppress(OSError):
                if self.log_path is not None:
                    self.log_path.unlink()
            self.log_path = None

    def failed(self, settle_s: float = 2.0) -> None:
        """The start failed: keep the output in the log file, show nothing."""
        if self._done:
            return
        self._restore()
        for drain in self._drains:  # the failing processes may still be writing
            drain.join(settle_s)

    def root_cause(self) -> str | None:
        return root_cause(list(self.lines))
