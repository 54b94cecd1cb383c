"""``saga demo``: the whole product on one machine, on embedded defaults.

Sets up the database (migrations, demo admin, tenants, templates, SAGA's policies), then runs in
one process: the control plane (HTTP, gateway, websockets), two simulated node agents that
register over the control websocket like real ones, and a small population of agents per tenant
driving workflows through the OpenAI-compatible gateway (a noisy neighbour among them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from dataclasses import dataclass

from django.conf import settings
from django.core.management import call_command
from django.db import transaction

DEMO_NODE_NAMES = ("sim-node-1", "sim-node-2")
DEMO_PROFILE = "h100-llama3-8b"
DEMO_MODEL = "llama-3-8b-sim"
WORKLOAD_KEY_NAME = "demo-workload"

log = logging.getLogger("saga.demo")


class DemoError(Exception):
    """The demo cannot start (a port is taken...): one line for the user."""


@dataclass(frozen=True, slots=True)
class DemoSetup:
    node_tokens: dict[str, str]
    workload_keys: dict[str, str]


def prepare() -> DemoSetup:
    """Migrate and seed; (re)issue the demo nodes' tokens and the workload's API keys."""
    from controlplane.audit.models import record
    from controlplane.nodes.models import Node, NodeEngine
    from controlplane.tenants.models import ApiKey, Tenant

    call_command("migrate", interactive=False, verbosity=0)
    call_command("seed_demo")
    tokens: dict[str, str] = {}
    keys: dict[str, str] = {}
    with transaction.atomic():
        for name in DEMO_NODE_NAMES:
            node, _created = Node.objects.get_or_create(name=name,
                                                        defaults={"engine": NodeEngine.SIM})
            tokens[name] = node.assign_new_token()
            node.save()
            record(actor="saga demo", action="node.rotate_token", obj=node)
        for tenant in Tenant.objects.filter(is_active=True):
            for old in tenant.api_keys.filter(name=WORKLOAD_KEY_NAME, revoked_at__isnull=True):
                old.revoke()
            _key, secret = ApiKey.issue(tenant, WORKLOAD_KEY_NAME, ["inference", "workflows"])
            keys[tenant.slug] = secret
    return DemoSetup(tokens, keys)


def _check_free(host: str, port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise DemoError(f"port {port} on {host} is in use ({exc.strerror}); stop whatever "
                            "holds it or pass --port") from exc


async def run(setup: DemoSetup, host: str, port: int, agents: bool,
              nodes: list[tuple[str, int]]) -> None:
    import uvicorn

    from controlplane.periodic import run_periodic
    from nodeagent.agent.cli import serve_node
    from nodeagent.agent.sim_backend import SimBackend
    from nodeagent.demo_agents import AgentMix, run_agents

    base_url = f"http://{host}:{port}"
    node_key = settings.SAGA_NODE_API_KEY or secrets.token_urlsafe(24)
    settings.SAGA_NODE_API_KEY = node_key  # the gateway and the demo nodes share it
    settings.SAGA_WHATIF_IN_PROCESS = True  # what-if jobs run here: the demo has no worker
    control_plane = uvicorn.Server(uvicorn.Config(
        "controlplane.asgi:application", host=host, port=port, lifespan="on",
        log_level="warning"))
    tasks = [asyncio.create_task(control_plane.serve(), name="control-plane")]
    while not control_plane.started:
        if tasks[0].done():
            tasks[0].result()
        await asyncio.sleep(0.05)
    for name, node_port in nodes:
        engine = SimBackend(DEMO_PROFILE, model_name=DEMO_MODEL, node_id=name)
        tasks.append(asyncio.create_task(serve_node(
            engine, control_plane=base_url, token=setup.node_tokens[name], host="127.0.0.1",
            port=node_port, api_key=node_key, log_level="warning"), name=name))
    print(f"SAGA demo on {base_url}/  (console: {base_url}/console/, admin: {base_url}/admin/,"
          f" API docs: {base_url}/api/docs, gateway: {base_url}/v1)", flush=True)
    print(f"nodes: {', '.join(f'{n} on 127.0.0.1:{p}' for n, p in nodes)}; "
          f"model {DEMO_MODEL}", flush=True)
    stop = asyncio.Event()
    # No celery beat here: the same periodic tasks (stale-node sweep, work stealing, reaping idle
    # workflows, the SLO series) run in this process at their CELERY_BEAT_SCHEDULE intervals.
    tasks.append(asyncio.create_task(run_periodic(stop), name="periodic"))
    if agents:
        mixes = {"acme": AgentMix("swe", 2, 6.0), "globex": AgentMix("webarena", 2, 4.0),
                 "noisy": AgentMix("mix", 6, 1.0)}
        await asyncio.sleep(2.0)  # let the nodes register
        tasks.append(asyncio.create_task(
            run_agents(base_url, setup.workload_keys, mixes, stop), name="agents"))
        print("agents: acme (SWE-like, weight 2), globex (WebArena-like), noisy (bursty); "
              f"watch them in the console: {base_url}/console/workflows/", flush=True)
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        stop.set()
        control_plane.should_exit = True
        for task in tasks:
            if task.get_name() != "control-plane":
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)


def main(host: str, port: int, *, serve: bool, agents: bool, node_base_port: int = 9001) -> None:
    nodes = [(name, node_base_port + i) for i, name in enumerate(DEMO_NODE_NAMES)]
    for check_host, check_port in ((host, port), *(("127.0.0.1", p) for _n, p in nodes)):
        if serve:
            _check_free(check_host, check_port)
    setup = prepare()
    if not serve:
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    for chatty in ("httpx", "httpx2", "celery.app.trace", "openai"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(setup, host, port, agents, nodes))
