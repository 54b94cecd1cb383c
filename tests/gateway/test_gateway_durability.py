"""A gateway process killed under load (SIGKILL, ``saga serve`` in a subprocess on PostgreSQL
and Redis, a simulated node answering at once) loses no outcome a client saw.

Issue 17's durability target: a call's record is committed (``synchronous_commit`` on) before
its answer's last byte reaches the client. So every call a client saw complete is recorded
``completed`` (checked right when the client got it, and again after the restart), and every
other call the killed process admitted gets a terminal outcome once the next process has
reconciled it; nothing stays pending and no in-flight lease is left.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

import httpx
import pytest

from controlplane.workflows.models import TERMINAL_OUTCOMES, Call, CallOutcome
from tests.gateway.conftest import NODE_KEY, tenant_key
from tests.gateway.test_gateway_processes import inflight, served
from tests.live import NodeProcess, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

CLIENTS = 8
CALLS_PER_WORKFLOW = 6


@dataclass
class Agent:
    """One client: workflows of ``CALLS_PER_WORKFLOW`` calls, one call at a time. It stops at
    its first call that does not complete, so each workflow's calls are its seqs in order."""

    index: int
    stream: bool
    completed: dict[str, int] = field(default_factory=dict)  # workflow -> calls seen complete
    unfinished: str | None = None  # the workflow whose last call did not complete
    not_recorded_yet: list[str] = field(default_factory=list)

    def call(self, client: httpx.Client, url: str, key: str, workflow: str) -> bool:
        body = {"model": "llama-3-8b", "max_tokens": 4, "stream": self.stream,
                "messages": [{"role": "user", "content": f"{workflow} step"}]}
        headers = {"Authorization": f"Bearer {key}", "X-Saga-Workflow": workflow}
        if not self.stream:
            response = client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
            return response.status_code == 200 and bool(response.json().get("choices"))
        with client.stream("POST", f"{url}/v1/chat/completions", json=body,
                           headers=headers) as response:
            if response.status_code != 200:
                return False
            finish, done = "", False
            for line in response.iter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    payload = json.loads(line[6:])
                    if "error" in payload:
                        return False
                    for choice in payload.get("choices") or ():
                        finish = choice.get("finish_reason") or finish
            return done and bool(finish)

    def run(self, url: str, key: str, stop: threading.Event) -> None:
        from django.db import connection

        try:
            self._loop(url, key, stop)
        finally:
            connection.close()  # this thread's, used by _check_recorded

    def _loop(self, url: str, key: str, stop: threading.Event) -> None:
        with httpx.Client(timeout=30) as client:
            n = 0
            while not stop.is_set():
                workflow = f"a{self.index}-w{n}"
                n += 1
                for seq in range(CALLS_PER_WORKFLOW):
                    try:
                        complete = self.call(client, url, key, workflow)
                    except (httpx.HTTPError, ValueError):
                        complete = False
                    if not complete:
                        self.unfinished = workflow
                        return
                    self.completed[workflow] = seq + 1
                    if seq == 0 and n % 4 == 1:
                        self._check_recorded(workflow, seq)
                    if stop.is_set():
                        return

    def _check_recorded(self, workflow: str, seq: int) -> None:
        """The client has the answer: its record is already committed as completed."""
        outcome = (Call.objects.filter(workflow__external_id=workflow, seq=seq)
                   .values_list("outcome", flat=True).first())
        if outcome != CallOutcome.COMPLETED:
            self.not_recorded_yet.append(f"{workflow}#{seq}: {outcome}")


def test_a_gateway_killed_under_load_loses_no_outcome_a_client_saw(redis_url: str) -> None:
    cp = served(redis_url)
    nodes: list[NodeProcess] = []
    stop = threading.Event()
    try:
        nodes = [NodeProcess(cp.url, "gpu-0", api_key=NODE_KEY, speed=1e6).start()]
        _tenant, key = tenant_key("acme")
        agents = [Agent(i, stream=i % 2 == 1) for i in range(CLIENTS)]
        threads = [threading.Thread(target=a.run, args=(cp.url, key, stop), daemon=True)
                   for a in agents]
        for thread in threads:
            thread.start()
        wait_for(lambda: sum(sum(a.completed.values()) for a in agents) >= 300,
                 "300 calls completed under load", 60)
        pending_at_kill = Call.objects.filter(outcome=CallOutcome.PENDING).count()
        cp.kill()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)
        seen = sum(sum(a.completed.values()) for a in agents)
        cp.start()
        wait_for(lambda: not Call.objects.filter(outcome=CallOutcome.PENDING).exists(),
                 "the restarted gateway to close the killed one's calls", 40)

        missing: list[str] = []
        extra: list[str] = []
        for agent in agents:
            assert agent.not_recorded_yet == []
            workflows = set(agent.completed) | ({agent.unfinished} - {None})
            for workflow in workflows:
                done = agent.completed.get(workflow, 0)
                calls = {c.seq: c for c in Call.objects.filter(workflow__external_id=workflow)}
                missing += [f"{workflow}#{s}" for s in range(done)
                            if s not in calls or calls[s].outcome != CallOutcome.COMPLETED]
                # The call that did not complete may have been admitted (then it has ended
                # somehow) or not; nothing after it was sent.
                extra += [f"{workflow}#{s}" for s in calls if s > done]
                if done in calls:
                    assert calls[done].outcome in TERMINAL_OUTCOMES
        assert missing == [] and extra == []
        outcomes = dict.fromkeys(TERMINAL_OUTCOMES, 0)
        for outcome in Call.objects.values_list("outcome", flat=True):
            outcomes[outcome] += 1
        assert outcomes[CallOutcome.COMPLETED] >= seen
        # The kill hit calls in flight (admitted, never seen complete), or it proved nothing.
        assert sum(outcomes.values()) > seen, outcomes
        assert sum(outcomes.values()) == Call.objects.count()
        print(f"{seen} calls seen complete by clients, {pending_at_kill} pending just before "
              f"the kill; after the restart: {outcomes}")
        wait_for(lambda: inflight(redis_url) == 0, "every lease released or expired", 20)
    finally:
        stop.set()
        cp.stop()
        for node in nodes:
            node.stop()

