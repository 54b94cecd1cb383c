"""What the gateway knows of the cluster: nodes that are up (refreshed from the database every
second, load from their heartbeats plus calls in flight) and the active policies (re-read when an
activation changes), as the policy layer's views."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from controlplane.nodes.models import Node, NodeStatus
from controlplane.policies.models import PolicyActivation
from controlplane.slo.isolated import node_cost
from controlplane.tenants.models import Tenant
from controlplane.workflows.models import AgentTemplate
from nodeagent.sim.isolated import CallCost
from nodeagent.sim.profiles import DEFAULT_BLOCK_SIZE
from plugins.events import FAILURE, PolicyEvent
from plugins.hookspecs import CLUSTER_KINDS
from plugins.manager import PolicyManager
from plugins.policyset import PolicySet
from plugins.views import NodeView, TenantView

REFRESH_S = 1.0
log = logging.getLogger("saga.gateway.policies")


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """A node that is up: its heartbeat's NodeView (the contract's fields, as the node computed
    them), its batch slots, the private cached tokens of its workflows, and the cost model its
    calls' isolated times come from (None: unknown; ``controlplane.slo.isolated.node_cost``)."""

    pk: int
    name: str
    address: str
    model: str
    view: NodeView
    max_num_seqs: int = 0
    cached_workflows: Mapping[str, int] = field(default_factory=dict)
    cost: CallCost | None = None
    block_size: int = DEFAULT_BLOCK_SIZE


class ClusterDirectory:
    def __init__(self, refresh_s: float = REFRESH_S) -> None:
        self.refresh_s = refresh_s
        self.manager = PolicyManager(kinds=CLUSTER_KINDS)  # the nodes hold the other kinds
        self._nodes: dict[str, NodeEntry] = {}
        self._tenants: dict[str, TenantView] = {}
        self._applied: dict[str, int] = {}
        self._graphs_at: datetime | None = None
        self._loaded_at = -1e9
        self._lock = threading.Lock()
        self._failures: list[PolicyEvent] = []
        self.manager.subscribe(self._on_policy_event)

    def _on_policy_event(self, event: PolicyEvent) -> None:
        """A routing policy raised: the manager already fell back; say so and keep it for the
        record (written by the process's housekeeping, outside the call's transaction)."""
        if event.type != FAILURE:
            return
        log.warning("gateway %s", event.message)
        with self._lock:
            self._failures.append(event)

    def put_back_failures(self, failures: list[PolicyEvent]) -> None:
        with self._lock:
            self._failures[:0] = failures

    def take_failures(self) -> list[PolicyEvent]:
        with self._lock:
            failures, self._failures = self._failures, []
        return failures

    def loaded(self) -> bool:
        return self._loaded_at > -1e9

    def stale(self) -> bool:
        """Older than ``refresh_s`` (the gateway's hot path then refreshes it in the
        background, ``runtime.fresh_directory``)."""
        return time.monotonic() - self._loaded_at >= self.refresh_s

    def refresh(self, force: bool = False) -> None:
        """Re-read nodes, tenants and activations when older than ``refresh_s`` (thread-safe)."""
        now = time.monotonic()
        if not force and now - self._loaded_at < self.refresh_s:
            return
        with self._lock:
            if not force and now - self._loaded_at < self.refresh_s:
                return
            self._nodes = {n.name: self._entry(n) for n in
                           Node.objects.filter(status=NodeStatus.UP).exclude(address="")}
            self._tenants = {t.slug: TenantView(t.slug, t.weight, t.slo_slowdown,
                                                t.slo_percentile)
                             for t in Tenant.objects.filter(is_active=True)}
            self._sync_policies()
            self._sync_graphs()
            self._loaded_at = now

    @staticmethod
    def _entry(node: Node) -> NodeEntry:
        load = node.last_load or {}
        total = int(load.get("kv_total_tokens") or node.kv_capacity_tokens or 0)
        used = int(load.get("kv_used_tokens") or 0)
        cached = {str(k): int(v) for k, v in (load.get("cached_workflows") or {}).items()}
        view = NodeView(node_id=node.name, waiting=int(load.get("waiting", 0)),
                        running=int(load.get("running", 0)), kv_free_tokens=max(total - used, 0),
                        kv_total_tokens=total, queue_delay_s=float(load.get("queue_delay_s", 0)),
                        load=float(load.get("load", 0.0)), cached_workflows=tuple(cached))
        cost, block_size, _basis = node_cost(node)
        return NodeEntry(node.pk, node.name, node.address.rstrip("/"), node.model_name, view,
                         node.max_num_seqs, cached, cost, block_size or DEFAULT_BLOCK_SIZE)

    def _sync_policies(self) -> None:
        for kind in self.manager.kinds:  # the gateway applies the cluster tier's kinds only
            head = PolicyActivation.objects.active(kind)  # a failed activation never ran
            if head is None or self._applied.get(kind) == head.pk:
                continue
            if head.policy.plugin_name in self.manager.registry.names(kind):
                cls = self.manager.registry.get(kind, head.policy.plugin_name)
                if not cls.requires_oracle:
                    self.manager.activate(kind, head.policy.plugin_name, head.policy.params)
            self._applied[kind] = head.pk

    def _sync_graphs(self) -> None:
        """Load execution graphs learned since the last refresh (routing uses their forecasts)."""
        rows = AgentTemplate.objects.exclude(aeg_updated_at=None)
        if self._graphs_at is not None:
            rows = rows.filter(aeg_updated_at__gt=self._graphs_at)
        for template in rows.order_by("aeg_updated_at"):
            self.manager.aeg.load(template.aeg_stats)
            self._graphs_at = template.aeg_updated_at

    def nodes_for(self, model: str) -> list[NodeEntry]:
        return [n for n in self._nodes.values() if n.model == model]

    def node(self, name: str) -> NodeEntry | None:
        return self._nodes.get(name)

    def models(self) -> list[str]:
        return sorted({n.model for n in self._nodes.values()})

    @property
    def tenants(self) -> dict[str, TenantView]:
        return self._tenants

    def policies(self) -> PolicySet:
        return self.manager.current()
