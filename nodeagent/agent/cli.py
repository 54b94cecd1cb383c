"""``saga node``: run a node agent (engine + OpenAI-compatible API + control connection)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any

DEFAULT_PROFILE = "h100-llama3-8b"


def register(subparsers: Any) -> None:
    node = subparsers.add_parser(
        "node", help="run a node agent on a GPU host (or a simulated one)",
        description="Run a node agent: an engine, its OpenAI-compatible API, and the control "
        "connection to the control plane. The token may come from SAGA_NODE_TOKEN and the "
        "API key from SAGA_NODE_API_KEY instead of the command line.",
    )
    node.add_argument("--control-plane", required=True, metavar="URL",
                      help="control plane base URL, e.g. http://127.0.0.1:8000")
    node.add_argument("--token", default=os.environ.get("SAGA_NODE_TOKEN"),
                      help="this node's token (shown once when the node was created)")
    node.add_argument("--engine", choices=("sim", "vllm"), required=True)
    node.add_argument("--model", default=None,
                      help="model served (vllm: path or name; sim: the name to report)")
    node.add_argument("--profile", default=DEFAULT_PROFILE,
                      help=f"simulated GPU/model profile (sim engine; default {DEFAULT_PROFILE})")
    node.add_argument("--speed", type=float, default=1.0,
                      help="simulated seconds per wall second (sim engine; default 1)")
    vllm = node.add_argument_group("vllm engine")
    vllm.add_argument("--tensor-parallel-size", type=int, default=1,
                      help="GPUs the model is split over (default 1)")
    vllm.add_argument("--max-model-len", type=int, default=None,
                      help="context length (default: the model's)")
    vllm.add_argument("--gpu-memory-utilization", type=float, default=0.9,
                      help="share of GPU memory vLLM may use (default 0.9)")
    vllm.add_argument("--tool-call-parser", default=None, metavar="NAME",
                      help="vLLM tool parser for the model's tool calls (e.g. hermes, llama3_json;"
                      " default: tool calls are not parsed)")
    node.add_argument("--host", default="127.0.0.1", help="API bind address (default 127.0.0.1)")
    node.add_argument("--port", type=int, default=9000, help="API port (default 9000)")
    node.add_argument("--advertise", default=None, metavar="URL",
                      help="URL the gateway reaches this node at (default http://HOST:PORT)")
    node.add_argument("--api-key", default=os.environ.get("SAGA_NODE_API_KEY"),
                      help="bearer key callers of this node's API must send (the gateway's)")
    node.add_argument("--log-level", default="INFO")


def _fail(message: str) -> int:
    print(f"saga node: error: {message}", file=sys.stderr)
    return 2


def _build_engine(args: argparse.Namespace) -> Any:
    if args.engine == "vllm":
        try:
            from nodeagent.agent.vllm_backend import VllmBackend
        except ImportError as exc:
            raise ValueError(f"the vllm engine needs vLLM 0.33 (pip install "
                             f"'saga-controlplane[vllm]'): {exc}") from exc
        if not args.model:
            raise ValueError("--model is required with --engine vllm")
        return VllmBackend(args.model, tensor_parallel_size=args.tensor_parallel_size,
                           max_model_len=args.max_model_len,
                           gpu_memory_utilization=args.gpu_memory_utilization,
                           tool_call_parser=args.tool_call_parser)
    from nodeagent.agent.sim_backend import SimBackend

    return SimBackend(args.profile, model_name=args.model or args.profile, speed=args.speed)


async def serve_node(engine: Any, *, control_plane: str, token: str, host: str, port: int,
                     api_key: str | None, advertise: str | None = None,
                     log_level: str = "info") -> None:
    """Run a node agent until cancelled: the API server and the control connection together.

    Raises ControlPlaneRefused when the token is refused, OSError when the port is taken.
    """
    import uvicorn

    from nodeagent.agent.control import ControlChannel
    from nodeagent.agent.http import NodeServer

    address = advertise or f"http://{host}:{port}"
    channel = ControlChannel(control_plane, token, engine, address=address)
    server = NodeServer(engine, api_key=api_key, model_name=engine.info.model,
                        ready=channel.synced.is_set, wait_ready=channel.synced.wait,
                        connected=channel.connected.is_set)
    config = uvicorn.Config(server.app, host=host, port=port, lifespan="off",
                            log_level=log_level.lower())
    http = uvicorn.Server(config)
    control = asyncio.create_task(channel.run_forever())
    serving = asyncio.create_task(http.serve())
    try:
        done, _pending = await asyncio.wait({control, serving},
                                            return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # re-raise a refused token or a bind failure
    finally:
        http.should_exit = True
        control.cancel()
        await asyncio.gather(control, serving, return_exceptions=True)
        await engine.close()


def run(args: argparse.Namespace) -> int:
    from nodeagent.agent.control import ControlPlaneRefused, websocket_url

    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.token:
        return _fail("a node token is required (--token or SAGA_NODE_TOKEN)")
    if not args.speed > 0:
        return _fail(f"--speed must be > 0, got {args.speed}")
    if not 1 <= args.port <= 65535:
        return _fail(f"--port must be in 1..65535, got {args.port}")
    try:
        websocket_url(args.control_plane)
        engine = _build_engine(args)
    except ValueError as exc:
        return _fail(str(exc))
    try:
        asyncio.run(serve_node(engine, control_plane=args.control_plane, token=args.token,
                               host=args.host, port=args.port, api_key=args.api_key,
                               advertise=args.advertise, log_level=args.log_level))
    except ControlPlaneRefused as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 0
    return 0
