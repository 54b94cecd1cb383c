"""The operator console in a real browser (Debian's Chromium, headless) against a live control
plane and two live simulated nodes, shared by the whole module: what every page shows equals
what the REST API returns, live updates arrive over the pages' websockets without a reload, the
policy rollout flow (an activation both nodes refuse included) and rollback, the tenant forms,
and Swagger's "Try it out" for a staff session. A screenshot of every page is saved under
``artifacts/console/`` (git-ignored)."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import openai
import pytest
from celery.contrib.testing.worker import start_worker
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from controlplane.celery import app as celery_app
from tests.browser.support import CHROMIUM_ARGS, SCREENSHOTS, chromium
from tests.live import NodeProcess, serve_control_plane, wait_for

MODEL = "llama-3-8b"
PASSWORD = "pw-console-123"
TOOLS = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]
PAGES = ("cluster", "workflows", "workflow", "templates", "template", "tenants", "tenant",
         "tenant-new", "policies", "activation", "whatif", "whatif-run")


@dataclass
class Console:
    url: str
    page: Any
    key: str
    nodes: list[NodeProcess]
    errors: list[str] = field(default_factory=list)

    def open(self, path: str) -> Any:
        self.page.goto(self.url + path)
        self.page.wait_for_load_state("load")
        return self.page

    def api(self, path: str, *, key: str | None = None) -> Any:
        """A REST read as the browser's staff session (or a tenant key) makes it."""
        if key is None:
            response = self.page.request.get(self.url + path)
            assert response.ok, (path, response.status, response.text())
            return response.json()
        answer = httpx.get(self.url + path, headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200, answer.text
        return answer.json()

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def mark(self) -> None:
        """Set a flag that only survives as long as the page is not reloaded."""
        self.page.evaluate("window.__sagaNoReload = true")

    def not_reloaded(self) -> bool:
        return bool(self.page.evaluate("window.__sagaNoReload === true"))


@pytest.fixture(scope="module")
def console(django_db_setup: None, django_db_blocker: Any, redis_url: str) -> Iterator[Console]:
    executable = chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API keeps an event loop in this thread; the ORM calls the tests make
    # from it are plain synchronous ones, which Django would otherwise refuse.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "1"
    with django_db_blocker.unblock():
        from controlplane.gateway import runtime
        from controlplane.policies.services import activate_policy, configured_policy
        from controlplane.tenants.models import ApiKey, Tenant

        get_user_model().objects.create_superuser("root", "", PASSWORD)
        tenant = Tenant.objects.create(slug="acme", name="Acme agents", weight=2,
                                       slo_slowdown=2.0, slo_percentile=95.0)
        _key, secret = ApiKey.issue(tenant, "agents", ["inference", "workflows"])
        activate_policy(configured_policy("eviction", "aeg", {}), actor="test")
        runtime.routing_state().clear()
        try:
            with serve_control_plane() as url:
                nodes = [NodeProcess(url, name, api_key=None).start()
                         for name in ("sim-a", "sim-b")]
                runtime.directory.refresh(force=True)
                wait_for(lambda: len(runtime.directory.nodes_for(MODEL)) == 2
                         or runtime.directory.refresh(force=True), "both nodes routable")
                worker = start_worker(celery_app, pool="solo", perform_ping_check=False,
                                      shutdown_timeout=10)  # learns completed workflows
                with worker, sync_api.sync_playwright() as p:
                    browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    found = Console(url, page, secret, nodes)
                    page.on("pageerror", lambda exc: found.errors.append(str(exc)))
                    page.goto(f"{url}/admin/login/?next=/console/")
                    page.fill("#id_username", "root")
                    page.fill("#id_password", PASSWORD)
                    page.click("input[type=submit]")
                    page.wait_for_url(f"{url}/console/")
                    try:
                        yield found
                    finally:
                        browser.close()
                        for node in nodes:
                            node.stop()
        finally:
            call_command("flush", interactive=False, verbosity=0)
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
            from django.db import connection

            if hasattr(connection, "close_pool"):  # the server's pooled connections
                connection.close_pool()


@pytest.fixture
def db(django_db_blocker: Any) -> Iterator[None]:
    """This module's ``db``: ORM access without a per-test transaction or flush, so the live
    server and nodes (other threads) see what a test writes and the module's tests share one
    cluster; the module flushes the database when it ends. Named ``db`` so that pytest-django
    sets up the test database for these tests (it looks for that name)."""
    with django_db_blocker.unblock():
        yield


class Agent:
    """An agent driving one workflow through the gateway: calls that end in a tool call,
    tool pauses between them, then a last call."""

    def __init__(self, console: Console, external_id: str) -> None:
        self.client = openai.OpenAI(base_url=f"{console.url}/v1", api_key=console.key,
                                    max_retries=0)
        self.headers = {"X-Saga-Workflow": external_id, "X-Saga-Template": "swe-agent"}
        self.messages: list[dict[str, Any]] = [{"role": "user", "content": "fix it " * 40}]

    def call(self, tool: bool = True) -> None:
        sim = {"finish_reason": "tool_calls", "output_tokens": 12} if tool else {
            "output_tokens": 6}
        reply = self.client.chat.completions.create(
            model=MODEL, messages=self.messages, tools=TOOLS,  # type: ignore[arg-type]
            extra_headers=self.headers, extra_body={"saga_sim": sim})
        message = reply.choices[0].message
        self.messages.append(message.model_dump(exclude_none=True))
        if message.tool_calls:
            self.messages.append({"role": "tool", "tool_call_id": message.tool_calls[0].id,
                                  "content": "output " * 20})

    def run(self, calls: int, pause_s: float) -> None:
        for _ in range(calls):
            time.sleep(pause_s)
            self.call()


def in_thread(work: Any, *args: Any) -> Any:
    """Run ``work`` in a thread of its own: code that sends on the channel layer
    (async_to_sync) cannot run in this thread, where Playwright keeps its event loop."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(work, *args).result(timeout=60)


def workflow_id(external_id: str) -> int:
    from controlplane.workflows.models import Workflow

    return Workflow.objects.values_list("pk", flat=True).get(external_id=external_id)


# ------------------------------------------------------------------------------------ access

def test_anonymous_users_are_sent_to_login_and_sockets_refused(console: Console, db: None) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    for path in ("/", "/console/", "/console/workflows/", "/console/templates/",
                 "/console/tenants/", "/console/tenants/new/", "/console/policies/"):
        answer = httpx.get(console.url + path, follow_redirects=True)
        assert answer.status_code == 200
        assert answer.url.path == "/admin/login/", path
        expected = "/console/" if path == "/" else path
        assert answer.url.params.get("next") == expected, path
    assert httpx.post(console.url + "/console/policies/activate/",
                      data={"kind": "eviction", "name": "lru"}).status_code in (302, 403)

    for path in ("/ws/ui/nodes/", "/ws/ui/workflows/", "/ws/ui/policies/", "/ws/ui/tenants/",
                 "/ws/ui/tenants/acme/"):
        with pytest.raises(InvalidStatus) as refused:  # closed before the handshake completes
            connect(console.url.replace("http", "ws") + path,
                    additional_headers={"Origin": console.url}).close()
        assert refused.value.response.status_code == 403, path


def test_the_root_lands_on_the_console_with_every_page_in_the_navigation(
        console: Console, db: None) -> None:
    page = console.open("/")
    assert page.url == console.url + "/console/"
    links = page.locator("header nav a").evaluate_all("links => links.map(a => a.pathname)")
    assert links == ["/console/", "/console/workflows/", "/console/templates/",
                     "/console/tenants/", "/console/policies/", "/console/whatif/"]
    assert httpx.get(console.url + "/console/whatif/").status_code == 302  # staff only


# ----------------------------------------------------------------------------------- cluster

def submit(page: Any, selector: str) -> None:
    """Click a form's submit button and wait for the page it leads to."""
    with page.expect_navigation():
        page.click(selector)


def same_moment(a: str | None, b: str | None) -> bool:
    """The same instant (the API writes milliseconds, the page's frames microseconds)."""
    from datetime import datetime

    if not a or not b:
        return False
    return abs((datetime.fromisoformat(a) - datetime.fromisoformat(b)).total_seconds()) < 1e-3


def node_rows(page: Any) -> dict[str, dict[str, str]]:
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll(
        '[data-testid=node-table] tbody tr[data-node]')].map(tr => [tr.dataset.node, {
          heartbeat: tr.dataset.heartbeat,
          ...Object.fromEntries([...tr.querySelectorAll('[data-field]')].map(td =>
            [td.dataset.field, td.dataset.value !== undefined ? td.dataset.value
             : td.textContent.trim()]))}]))""")


def test_cluster_page_equals_the_api_and_follows_heartbeats(console: Console, db: None) -> None:
    page = console.open("/console/")
    page.wait_for_selector("[data-testid=node-table] tr[data-node='sim-b']")
    page.wait_for_selector("#live-indicator[data-state=live]")
    console.mark()

    def consistent() -> tuple[dict[str, Any], dict[str, Any]] | None:
        shown, api = node_rows(page), {n["name"]: n for n in console.api("/api/admin/nodes")}
        if all(same_moment(shown[name]["heartbeat"], api[name]["last_heartbeat_at"])
               for name in ("sim-a", "sim-b")):
            return shown, api
        return None

    deadline = time.monotonic() + 20
    pair = None
    while pair is None and time.monotonic() < deadline:
        pair = consistent()  # a heartbeat may land between the two reads: read again
    assert pair is not None
    shown, api = pair
    for name in ("sim-a", "sim-b"):
        load, row = api[name]["last_load"], shown[name]
        assert row["status"].startswith("up")
        assert row["running_waiting"] == f"{load['running']} / {load['waiting']}"
        assert float(row["load"]) == pytest.approx(load["load"])
        assert float(row["queue_delay_s"]) == pytest.approx(load["queue_delay_s"])
        assert float(row["prefix_cache_hit_rate"]) == pytest.approx(
            load["prefix_cache_hit_rate"])
        assert float(row["kv_use"]) == pytest.approx(
            load["kv_used_tokens"] / load["kv_total_tokens"])
        assert row["kv_tokens"] == (f"{load['kv_used_tokens']:,} / "
                                    f"{load['kv_total_tokens']:,}")
        assert row["cached_workflows"] == str(len(load["cached_workflows"]))
        assert row["policy-eviction"].startswith("aeg v1")
        assert api[name]["policies"]["eviction"].startswith("applied")

    # the next heartbeat (every 5 s) rewrites the row in place, without a reload
    before = shown["sim-a"]["heartbeat"]
    page.wait_for_function(
        "before => document.querySelector(\"tr[data-node='sim-a']\").dataset.heartbeat "
        "!== before", arg=before, timeout=15000)
    assert console.not_reloaded()
    console.shot("cluster")


def test_a_lost_connection_shows_stale_data_then_reconnects(console: Console, db: None) -> None:
    page = console.open("/console/")
    page.wait_for_selector("#live-indicator[data-state=live]")
    console.mark()
    page.evaluate("Saga.sockets[0].socket.close()")
    page.wait_for_selector("#live-indicator[data-state=stale]", timeout=5000)
    assert "reconnecting" in page.inner_text("#live-indicator")
    assert page.evaluate("document.body.classList.contains('stale')")
    page.wait_for_selector("#live-indicator[data-state=live]", timeout=10000)
    assert not page.evaluate("document.body.classList.contains('stale')")
    assert console.not_reloaded()


# --------------------------------------------------------------------------------- workflows

def test_a_workflows_graph_grows_while_its_agent_runs(console: Console, db: None) -> None:
    agent = Agent(console, "task-graph")
    agent.call()
    wf = workflow_id("task-graph")
    page = console.open(f"/console/workflows/{wf}/")
    graph = page.locator("[data-testid=execution-graph]")
    page.wait_for_selector("#live-indicator[data-state=live]")
    console.mark()
    assert graph.get_attribute("data-calls") == "1"
    runner = threading.Thread(target=agent.run, args=(3, 0.6))
    runner.start()
    page.wait_for_function(
        "() => Number(document.querySelector('[data-testid=execution-graph]')"
        ".dataset.calls) >= 2", timeout=15000)
    runner.join(timeout=30)
    page.wait_for_function(
        "() => document.querySelector('[data-testid=execution-graph]').dataset.calls === '4'"
        " && document.querySelector('[data-testid=execution-graph]').dataset.toolCalls === '4'",
        timeout=15000)
    assert console.not_reloaded()
    assert page.evaluate("window.SagaWorkflowGraph.nodes().length") == 8  # 4 calls, 4 tools
    assert page.locator("[data-testid=forecast]").inner_text().count("P(another call)") == 1
    assert "bash" in page.locator("[data-testid=forecast]").inner_text()
    console.shot("workflow")

    # what the page shows is what the tenant API returns for the same workflow
    api = console.api(f"/api/workflows/{wf}/calls", key=console.key)
    rows = page.evaluate("""() => [...document.querySelectorAll(
        '[data-testid=call-table] tbody tr')].map(tr => Object.fromEntries(
        [...tr.querySelectorAll('[data-field]')].map(td => [td.dataset.field,
        td.textContent.trim()])))""")
    assert len(rows) == len(api["calls"]) == 4
    for row, call in zip(rows, api["calls"], strict=True):
        assert row["node"] == call["node"]
        assert row["prompt_tokens"] == f"{call['prompt_tokens']:,}"
        assert row["cached_tokens"] == f"{call['cached_tokens']:,}"
        assert row["output_tokens"] == f"{call['output_tokens']:,}"
        assert row["outcome"] == call["outcome"]
        assert row["finish_reason"] == call["finish_reason"]
    tools = page.locator("[data-testid=tool-table] [data-field=name]").all_inner_texts()
    assert tools == [t["name"] for t in api["tool_calls"]]

    agent.call(tool=False)
    assert httpx.post(f"{console.url}/api/workflows/{wf}/complete",
                      headers={"Authorization": f"Bearer {console.key}"}).status_code == 200
    page.wait_for_function("() => document.querySelector('[data-testid=workflow-outcome]')"
                           ".textContent.includes('SLO status')", timeout=15000)
    assert "nothing to forecast" in page.locator("[data-testid=forecast]").inner_text()


def test_the_workflow_list_is_live_and_filters(console: Console, db: None) -> None:
    page = console.open("/console/workflows/?tenant=acme")
    page.wait_for_selector("#live-indicator[data-state=live]")
    console.mark()
    Agent(console, "task-list").call()
    page.wait_for_selector("[data-testid=workflow-table] tr:has-text('task-list')",
                           timeout=15000)
    assert console.not_reloaded()
    row = page.locator("[data-testid=workflow-table] tr:has-text('task-list')")
    assert row.locator("[data-field=calls]").inner_text() == "1"
    console.shot("workflows")
    page = console.open("/console/workflows/?state=completed")
    states = page.locator("[data-testid=workflow-table] tbody tr[data-state]")
    assert states.count() >= 1
    assert set(states.evaluate_all("rows => rows.map(r => r.dataset.state)")) == {"completed"}


def test_the_template_page_draws_the_learned_graph_and_follows_learning(
        console: Console, db: None) -> None:
    from controlplane.workflows.models import AgentTemplate

    wait_for(lambda: AgentTemplate.objects.get(name="swe-agent").aeg_updated_at is not None,
             "the completed workflow to be learned")
    page = console.open("/console/templates/swe-agent/")
    graph = page.locator("[data-testid=aeg-graph]")
    page.wait_for_selector("#live-indicator[data-state=live]")
    console.mark()
    learned = int(graph.get_attribute("data-workflows") or 0)
    stats = AgentTemplate.objects.get(name="swe-agent").aeg_stats
    assert learned == stats["workflows_seen"] >= 1
    assert page.evaluate("window.SagaAegGraph.nodes().map(n => n.id()).sort()") == sorted(
        ["call", "end", "tool:bash", "tool:*"])
    edge = page.locator("[data-testid=aeg-edges] tr:has-text('bash')").first
    assert edge.is_visible()
    console.shot("template")

    agent = Agent(console, "task-learn")
    agent.call()
    agent.call(tool=False)
    assert httpx.post(f"{console.url}/api/workflows/{workflow_id('task-learn')}/complete",
                      headers={"Authorization": f"Bearer {console.key}"}).status_code == 200
    page.wait_for_function(
        "n => Number(document.querySelector('[data-testid=aeg-graph]').dataset.workflows) > n",
        arg=learned, timeout=15000)
    assert console.not_reloaded()
    page = console.open("/console/templates/")
    assert page.locator("[data-testid=template-table] a:has-text('swe-agent')").is_visible()
    console.shot("templates")


# ----------------------------------------------------------------------------------- tenants

def chart_points(page: Any) -> tuple[list[str], list[float | None]]:
    trace = page.evaluate("() => document.getElementById('slo-chart').data[0]")
    return list(trace["x"]), list(trace["y"])


def test_tenant_slo_chart_equals_the_api_and_gets_new_points(console: Console,
                                                              db: None) -> None:
    from controlplane.slo import series

    now = timezone.now()
    in_thread(series.aggregate, now)  # points for the completed workflows so far
    page = console.open("/console/tenants/acme/")
    page.wait_for_selector("#live-indicator[data-state=live]")
    page.wait_for_function("() => document.getElementById('slo-chart').data")
    console.mark()
    api = console.api("/api/admin/tenants/acme/slo/series")
    assert api["points"], "the aggregation wrote points"
    x, y = chart_points(page)
    assert [re.sub(r"\+00:00$|Z$", "", t) for t in x] == [
        re.sub(r"\+00:00$|Z$", "", p["window_end"]) for p in api["points"]]
    assert y == [p["cum_attainment"] for p in api["points"]]
    assert page.locator("#slo-chart").get_attribute("data-points") == str(len(api["points"]))
    histogram = page.evaluate("() => document.getElementById('slowdown-distribution').data[0].x")
    assert len(histogram) >= 2  # task-graph and task-learn were evaluated
    console.shot("tenant")

    # the next closed window's point arrives over the websocket
    before = len(api["points"])
    written = in_thread(series.aggregate, now + timedelta(seconds=25))
    assert any(p.tenant.slug == "acme" for p in written)
    page.wait_for_function(
        "n => Number(document.getElementById('slo-chart').dataset.points) > n",
        arg=before, timeout=10000)
    assert console.not_reloaded()
    shown, _ = chart_points(page)
    newest = console.api("/api/admin/tenants/acme/slo/series?since="
                         + (now - timedelta(hours=2)).isoformat().replace("+", "%2B"))
    assert len(shown) == len(newest["points"])

    page = console.open("/console/tenants/")
    page.wait_for_function("() => document.getElementById('slo-chart').data")
    traces = page.evaluate("() => document.getElementById('slo-chart').data"
                           ".filter(t => t.meta && t.meta.tenant === 'acme')")
    assert traces and traces[0]["y"] == [p["cum_attainment"] for p in newest["points"]]
    console.shot("tenants")


def test_tenant_forms_name_the_field_of_each_error(console: Console, db: None) -> None:
    from controlplane.audit.models import AuditEvent
    from controlplane.tenants.models import ApiKey, Tenant

    page = console.open("/console/tenants/new/")
    page.fill("#id_slug", "bad slug!")
    page.fill("#id_name", "Globex")
    page.fill("#id_weight", "5000")
    page.fill("#id_slo_slowdown", "0.5")
    page.fill("#id_slo_percentile", "0")
    page.fill("#id_max_concurrent_workflows", "1.5")
    submit(page, "[data-testid=tenant-form] button[type=submit]")
    errors = {name: page.locator(f"[data-testid=error-{name}]").inner_text()
              for name in ("slug", "weight", "slo_percentile", "max_concurrent_workflows")}
    assert errors["slug"].startswith("Slug:")
    assert errors["max_concurrent_workflows"].startswith("Max concurrent workflows:")
    assert errors["weight"].startswith("Weight:") and "1000" in errors["weight"]
    assert errors["slo_percentile"].startswith("SLO percentile:")
    console.shot("tenant-new")
    page.fill("#id_slug", "globex")
    page.fill("#id_max_concurrent_workflows", "")
    page.fill("#id_weight", "3")
    page.fill("#id_slo_percentile", "90")
    submit(page, "[data-testid=tenant-form] button[type=submit]")
    assert page.locator("[data-testid=error-slo_slowdown]").inner_text().startswith(
        "SLO slowdown:")
    assert not Tenant.objects.filter(slug="globex").exists()
    page.fill("#id_slo_slowdown", "3")
    submit(page, "[data-testid=tenant-form] button[type=submit]")
    assert page.url == f"{console.url}/console/tenants/globex/"
    globex = Tenant.objects.get(slug="globex")
    assert (globex.weight, globex.slo_slowdown, globex.slo_percentile) == (3, 3, 90)
    assert AuditEvent.objects.filter(action="tenant.create", actor="root").exists()

    page.fill("#id_max_concurrent_workflows", "-1")
    submit(page, "[data-testid=tenant-form] button[type=submit]")
    assert page.locator("[data-testid=error-max_concurrent_workflows]").inner_text(
    ).startswith("Max concurrent workflows:")
    page.fill("#id_max_concurrent_workflows", "4")
    submit(page, "[data-testid=tenant-form] button[type=submit]")
    assert "saved" in page.locator(".messages").inner_text()
    assert Tenant.objects.get(slug="globex").max_concurrent_workflows == 4

    page.fill("[data-testid=key-form] #id_name", "ci")
    page.uncheck("[data-testid=key-form] input[value=workflows]")
    submit(page, "[data-testid=key-form] button[type=submit]")
    secret = page.locator("[data-testid=new-key]").inner_text().strip()
    key = ApiKey.authenticate(secret)
    assert key is not None and key.tenant.slug == "globex" and key.scopes == ["inference"]
    submit(page, "text=Done")
    assert secret not in page.content()  # shown once
    page.once("dialog", lambda dialog: dialog.accept())
    submit(page, f"tr[data-key='{key.display_prefix}'] button")
    assert ApiKey.authenticate(secret) is None


# ---------------------------------------------------------------------------------- policies

def rollout(console: Console, activation_id: int) -> dict[str, Any]:
    return console.api(f"/api/admin/policies/activations/{activation_id}")


def activation_on_page(console: Console) -> int:
    match = re.search(r"/console/policies/activations/(\d+)/$", console.page.url)
    assert match, console.page.url
    return int(match.group(1))


def test_policy_rollout_flow_refusal_and_rollback(console: Console, db: None) -> None:
    page = console.open("/console/policies/")
    form = page.locator("[data-testid=policy-form][data-policy='eviction:ttl']")
    page.click("details[data-policy='eviction:ttl'] summary")
    form.locator("input[name='p.ttl_s']").fill("-1")
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    assert "ttl_s" in page.locator("[data-testid=param-error-ttl_s]").inner_text()
    form = page.locator("[data-testid=policy-form][data-policy='eviction:ttl']")
    form.locator("input[name='p.ttl_s']").fill("45")
    form.locator("input[name='p.per_tool_ttl_s.key']").fill("bash")
    form.locator("input[name='p.per_tool_ttl_s.value']").fill("90")
    form.locator("input[name=reason]").fill("try Continuum")
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    diff = page.locator("[data-testid=activation-diff]").inner_text()
    assert "aeg" in diff and "ttl" in diff and "45" in diff and "bash" in diff
    page.click("[data-testid=confirm-activation]")
    page.wait_for_url(re.compile(r".*/console/policies/activations/\d+/$"))
    ttl_id = activation_on_page(console)
    page.wait_for_selector("[data-testid=rollout-status][data-rollout=applied]", timeout=15000)
    shown = page.locator("[data-testid=rollout-status] tr[data-node]")
    assert shown.evaluate_all("rows => rows.map(r => r.dataset.status)") == ["applied"] * 2
    api = rollout(console, ttl_id)
    assert api["rollout"] == "applied" and api["in_force_id"] == ttl_id
    assert api["params"] == {"ttl_s": 45.0, "per_tool_ttl_s": {"bash": 90.0}}

    # belady: both nodes refuse it; the page says failed, and nothing records it as active
    page = console.open("/console/policies/")
    page.click("details[data-policy='eviction:belady'] summary")
    submit(page, "[data-testid=policy-form][data-policy='eviction:belady'] "
           "button[type=submit]")
    assert page.locator("[data-testid=oracle-warning]").is_visible()
    page.click("[data-testid=confirm-activation]")
    page.wait_for_url(re.compile(r".*/console/policies/activations/\d+/$"))
    belady_id = activation_on_page(console)
    page.wait_for_selector("[data-testid=rollout-status][data-rollout=failed]", timeout=15000)
    panel = page.locator("[data-testid=rollout-status]")
    assert "not in force" in panel.inner_text()
    assert panel.locator("tr[data-node]").evaluate_all(
        "rows => rows.map(r => r.dataset.status)") == ["rejected"] * 2
    assert all("simulator" in t for t in panel.locator("[data-field=error]").all_inner_texts())
    api = rollout(console, belady_id)
    assert api["rollout"] == "failed" and api["in_force_id"] == ttl_id
    assert {n["runs"]["activation_id"] for n in api["nodes"]} == {ttl_id}
    active = {a["kind"]: a for a in console.api("/api/admin/policies/active")}
    assert active["eviction"]["id"] == ttl_id and active["eviction"]["name"] == "ttl"
    console.shot("activation")

    page = console.open("/console/policies/")
    in_force = page.locator("[data-testid=in-force][data-kind=eviction]").inner_text()
    assert "ttl v" in in_force and "belady" not in in_force
    assert page.locator("[data-testid=rollout-status][data-kind=eviction]").get_attribute(
        "data-rollout") == "failed"
    assert "every node refused it" in page.locator("[data-testid=policy-audit]").inner_text()
    console.shot("policies")

    # the cluster page shows each node still running ttl, and the refusal beside it
    page = console.open("/console/")
    cell = page.locator("tr[data-node='sim-a'] [data-field=policy-eviction]")
    page.wait_for_function("() => document.querySelector(\"tr[data-node='sim-a'] "
                           "[data-field=policy-eviction]\").textContent.includes('refused')")
    assert cell.inner_text().startswith("ttl v")

    # roll back: ttl was in force, so the rollback re-activates aeg (belady never ran)
    page = console.open("/console/policies/")
    submit(page, "[data-testid=rollback-eviction]")
    assert "aeg" in page.locator("[data-testid=rollback-confirm]").inner_text()
    page.click("[data-testid=confirm-rollback]")
    page.wait_for_url(re.compile(r".*/console/policies/activations/\d+/$"))
    rolled = activation_on_page(console)
    page.wait_for_selector("[data-testid=rollout-status][data-rollout=applied]", timeout=15000)
    active = {a["kind"]: a for a in console.api("/api/admin/policies/active")}
    assert active["eviction"]["id"] == rolled and active["eviction"]["name"] == "aeg"
    assert active["eviction"]["is_rollback"]


# ------------------------------------------------------------------------------------ what-if

def test_whatif_replays_recent_traffic_and_opens_the_rollout(console: Console, db: None) -> None:
    """The last hour of this module's traffic (an agent's workflow at least) replayed under
    saga and baseline on the recorded cluster by the module's Celery worker: progress per task,
    then the results side by side, the report, and the roll-out link to the policies page."""
    from controlplane.whatif.models import WhatIfRun

    agent = Agent(console, "whatif-traffic")
    in_thread(agent.run, 3, 0.1)
    in_thread(agent.call, False)
    page = console.open("/console/whatif/")
    form = page.locator("[data-testid=whatif-form]")
    form.locator("input[name=policies]").fill("saga, baseline, nope")
    submit(page, "[data-testid=whatif-form] button[type=submit]")
    shown = page.locator(".errorlist").all_inner_texts()
    assert any("unknown policy set 'nope'" in e for e in shown), shown
    assert page.locator("[data-testid=error-policies]").count() == 1, shown
    assert not WhatIfRun.objects.exists()
    console.shot("whatif")
    page.locator("[data-testid=whatif-form] input[name=policies]").fill("saga, baseline")
    submit(page, "[data-testid=whatif-form] button[type=submit]")
    assert re.search(r"/console/whatif/\d+/$", page.url), page.url
    run = WhatIfRun.objects.get()
    assert page.locator("[data-testid=task-table] tr[data-task]").count() == 2
    page.wait_for_selector("[data-testid=run-status].succeeded", timeout=120_000)
    page.wait_for_selector("[data-testid=results-table] tr[data-policy=baseline]")
    speedup = page.locator("tr[data-policy=saga] [data-field=speedup]").inner_text()
    run.refresh_from_db()
    expected = run.results["policies"]["saga"]["tct_geomean_speedup"]
    assert speedup.startswith(f"{expected:.2f}x"), (speedup, expected)
    statuses = page.locator("[data-testid=task-table] tr[data-task]").evaluate_all(
        "rows => rows.map(r => r.dataset.status)")
    assert statuses == ["succeeded", "succeeded"]
    assert page.locator("[data-testid=tenant-results] tr[data-tenant=acme]").count() == 1
    frame = page.frame_locator("[data-testid=report]")
    frame.locator(".plotly-graph-div").first.wait_for(timeout=30_000)
    console.shot("whatif-run")
    submit(page, "[data-testid=rollout-saga]")
    assert page.url.startswith(console.url + "/console/policies/?open=")
    assert page.locator("details[data-policy='routing:saga']").get_attribute("open") is not None


# ------------------------------------------------------------------------------------ swagger

def test_swagger_try_it_out_works_for_a_staff_session(console: Console, db: None) -> None:
    from controlplane.tenants.models import Tenant

    page = console.open("/api/docs")
    page.wait_for_selector(".opblock")
    operation = page.locator(".opblock-post:has(.opblock-summary-path[data-path="
                             "'/api/admin/tenants'])")
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    operation.locator("textarea.body-param__text").fill(
        '{"slug": "from-swagger", "name": "Made in the docs"}')
    operation.locator("button.execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for(timeout=10000)
    assert status.inner_text().strip() == "201"
    assert Tenant.objects.filter(slug="from-swagger").exists()
    console.shot("api-docs")


def test_no_page_raised_a_script_error(console: Console, db: None) -> None:
    """Runs last: every page the module visited ran its scripts without an uncaught error."""
    assert console.errors == []
    missing = [name for name in PAGES if not (SCREENSHOTS / f"{name}.png").is_file()]
    assert missing == []
