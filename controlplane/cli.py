"""The ``saga`` command line.

Each subcommand lives with the code it drives and registers itself through a
``register(subparsers)`` function: ``policies`` in ``plugins.cli``, ``bench`` in
``nodeagent.bench.cli``, ``fidelity`` in ``nodeagent.fidelity.cli``. Only ``serve``, ``demo``
and ``manage`` need Django, and they import it lazily, so ``saga bench`` and ``saga policies``
start fast and work without a database.

Bad usage exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

SUBCOMMAND_MODULES = (
    "plugins.cli",
    "nodeagent.bench.cli",
    "controlplane.gatewaybench.cli",
    "controlplane.gatewaybench.soak",
    "nodeagent.agent.cli",
    "nodeagent.agent.tiny_model",
    "nodeagent.fidelity.cli",
    "controlplane.whatif.cli",
)
DEFAULT_SETTINGS = "controlplane.settings.dev"


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (``saga: error: ...``) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="saga",
        description="SAGA: workflow-atomic scheduling of AI-agent LLM inference on GPU clusters.",
    )
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=OneLineErrorParser
    )
    _add_serve(subparsers)
    _add_demo(subparsers)
    _add_manage(subparsers)
    for module_name in SUBCOMMAND_MODULES:
        module = importlib.import_module(module_name)
        before = set(subparsers.choices)
        module.register(subparsers)
        for name in set(subparsers.choices) - before:
            # Modules expose run(args) -> int; a handler they set themselves takes precedence.
            if subparsers.choices[name].get_default("handler") is None:
                subparsers.choices[name].set_defaults(handler=module.run)
    return parser


def _add_serve(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = subparsers.add_parser("serve", help="run the control plane (ASGI: HTTP + websockets)")
    _add_server_options(serve)
    serve.add_argument("--workers", type=_workers, default=1,
                       help="server processes sharing the port (default 1; needs REDIS_URL and "
                            "DATABASE_URL above 1, so they share routing state and quotas)")
    serve.add_argument("--graceful-timeout", type=_seconds, default=30.0, metavar="SECONDS",
                       help="on SIGTERM, how long calls in flight may finish before they are "
                            "closed as interrupted (default 30)")
    serve.set_defaults(handler=_run_serve)


def _add_demo(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    demo = subparsers.add_parser(
        "demo", help="set up a demo database, then run the control plane, two simulated "
        "nodes and demo agents"
    )
    _add_server_options(demo)
    demo.add_argument(
        "--no-serve", action="store_true", help="set everything up, then exit without serving"
    )
    demo.add_argument(
        "--no-agents", action="store_true", help="serve, but start no demo agent workload"
    )
    demo.add_argument("--node-base-port", type=_port, default=9001,
                      help="the simulated nodes listen on this port and the next (default 9001)")
    demo.set_defaults(handler=_run_demo)


def _add_manage(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    manage = subparsers.add_parser(
        "manage", help="run a Django management command (saga manage migrate, ...)",
        add_help=False,
    )
    manage.add_argument("args", nargs=argparse.REMAINDER)
    manage.set_defaults(handler=_run_manage)


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8000, help="port to bind (default 8000)")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be an integer, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 1..65535, got {value}")
    return value


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"workers must be an integer, got {text!r}") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"workers must be in 1..64, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"seconds must be in 0..3600, got {value}")
    return value


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", DEFAULT_SETTINGS)
    import django

    django.setup()


def _serve(host: str, port: int, workers: int = 1, graceful_timeout_s: float = 30.0) -> int:
    import uvicorn

    print(f"SAGA control plane on http://{host}:{port}/ (admin at /admin/)", flush=True)
    # The gateway's entry point: /v1/ through a lean handler, the rest as controlplane.asgi.
    uvicorn.run(
        "controlplane.asgi:application", host=host, port=port, lifespan="on",
        log_level="info", workers=workers, timeout_graceful_shutdown=int(graceful_timeout_s),
        # Longer than clients' usual idle expiry, so a client rarely reuses a connection the
        # server is closing (its request would fail before reaching the gateway).
        timeout_keep_alive=75,
    )
    return 0


def _run_serve(args: argparse.Namespace) -> int:
    _setup_django()
    if args.workers > 1:
        from django.conf import settings

        if not settings.REDIS_URL or settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
            print("saga serve: error: --workers above 1 needs DATABASE_URL (PostgreSQL) and "
                  "REDIS_URL", file=sys.stderr)
            return 2
    return _serve(args.host, args.port, args.workers, args.graceful_timeout)


def _run_demo(args: argparse.Namespace) -> int:
    _setup_django()
    from controlplane import demo

    try:
        demo.main(args.host, args.port, serve=not args.no_serve, agents=not args.no_agents,
                  node_base_port=args.node_base_port)
    except demo.DemoError as exc:
        print(f"saga demo: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _run_manage(args: argparse.Namespace) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", DEFAULT_SETTINGS)
    from django.core.management import execute_from_command_line

    execute_from_command_line(["saga manage", *args.args])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except BrokenPipeError:  # `saga ... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
