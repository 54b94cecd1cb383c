"""GPU nodes that run a node agent (vLLM with SAGA hooks, or the simulated engine)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import models, transaction
from django.db.models import Case, Value, When
from django.utils import timezone

from controlplane import credentials

CLOSE_REVOKED = 4401
CLOSE_REPLACED = 4409


def node_group(node_id: int) -> str:
    """Channel-layer group that reaches one node's connection (policy pushes, commands)."""
    return f"node.{node_id}"


def disconnect_on_commit(node_id: int, code: int, reason: str) -> None:
    """Close the node's control connection once the current transaction commits."""
    def send() -> None:
        from asgiref.sync import async_to_sync
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(layer.group_send)(
                node_group(node_id), {"type": "node.disconnect", "code": code, "reason": reason})

    transaction.on_commit(send)


LOAD_HISTORY_SAMPLES = 60
"""Heartbeats kept per node for the console's sparklines (5 minutes at the default interval)."""


def load_sample(load: dict[str, Any], at: Any) -> dict[str, Any]:
    """The figures of one heartbeat the console draws over time."""
    total = load.get("kv_total_tokens") or 0
    return {"t": at.isoformat(), "load": load.get("load", 0.0),
            "kv_use": (load.get("kv_used_tokens") or 0) / total if total else None,
            "hit": load.get("prefix_cache_hit_rate"), "queue_delay_s": load.get("queue_delay_s"),
            "running": load.get("running", 0), "waiting": load.get("waiting", 0)}


ISOLATED_COST_FIELDS = ("isolated_prefill_s_per_token", "isolated_decode_s_per_token")
"""Heartbeat fields a vLLM node measures its single-request costs in (``nodeagent.wire``); kept
on the node (the last measured value) for its isolated-time calibration."""


class NodeEngine(models.TextChoices):
    VLLM = "vllm", "vLLM"
    SIM = "sim", "Simulated"


class NodeStatus(models.TextChoices):
    PENDING = "pending", "Pending (never connected)"
    UP = "up", "Up"
    DOWN = "down", "Down (missed heartbeats)"
    DRAINING = "draining", "Draining"


class Node(models.Model):
    SECRET_KIND = "nt"

    name = models.SlugField(max_length=100, unique=True)
    engine = models.CharField(max_length=8, choices=NodeEngine.choices, default=NodeEngine.SIM)
    model_name = models.CharField(max_length=200, blank=True)
    gpu_model = models.CharField(max_length=100, blank=True)
    gpu_count = models.PositiveSmallIntegerField(default=1)
    kv_capacity_tokens = models.PositiveBigIntegerField(
        default=0, help_text="KV cache capacity in tokens, as reported at registration."
    )
    max_num_seqs = models.PositiveIntegerField(
        default=0, help_text="Batch slots (calls running at once), as reported at registration."
    )
    profile = models.CharField(
        max_length=100, blank=True,
        help_text="Simulated GPU x model profile whose cost model the node runs (sim nodes).",
    )
    address = models.URLField(blank=True, help_text="Base URL of the node's OpenAI-compatible API.")
    isolated_prefill_s_per_token = models.FloatField(
        null=True, blank=True, editable=False,
        help_text="Seconds per prefilled token the node measured from steps that served a single "
        "request (vLLM nodes, from heartbeats): its isolated-time calibration.",
    )
    isolated_decode_s_per_token = models.FloatField(
        null=True, blank=True, editable=False,
        help_text="Seconds per decoded token, measured like isolated_prefill_s_per_token.",
    )
    status = models.CharField(
        max_length=16, choices=NodeStatus.choices, default=NodeStatus.PENDING, editable=False
    )
    last_heartbeat_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_load = models.JSONField(default=dict, blank=True, editable=False)
    load_history = models.JSONField(
        default=list, blank=True, editable=False,
        help_text="The last heartbeats' main figures (load_sample), oldest first.")
    # NULL, not "", before a token is issued: the column is unique and "" would collide.
    token_prefix = models.CharField(  # noqa: DJ001
        max_length=credentials.PREFIX_CHARS, unique=True, null=True, editable=False
    )
    token_hash = models.CharField(max_length=64, blank=True, editable=False)
    token_revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    drained_at = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="Set while an operator drains the node: it gets no new calls until undrained, "
        "whatever its connection does.",
    )
    connection = models.CharField(
        max_length=200, blank=True, editable=False,
        help_text="Channel of the node's current control connection (the newest one wins).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["status", "last_heartbeat_at"])]

    def __str__(self) -> str:
        return self.name

    def assign_new_token(self) -> str:
        """Rotate the node's token; returns the plaintext, shown once. Save afterwards."""
        issued = credentials.issue_secret(self.SECRET_KIND)
        self.token_prefix = issued.prefix
        self.token_hash = issued.digest
        self.token_revoked_at = None
        return issued.plaintext

    def revoke_token(self) -> None:
        """Revoke the token: the node's connection is closed and it leaves routing at once."""
        self.token_revoked_at = timezone.now()
        self.status = NodeStatus.DOWN
        self.save(update_fields=["token_revoked_at", "status"])
        disconnect_on_commit(self.pk, CLOSE_REVOKED, "node token revoked")

    def rotate_token(self) -> str:
        """Issue a new token (returned once); the connection made with the old one is closed,
        and the node is down until an agent connects with the new token."""
        plaintext = self.assign_new_token()
        self.status = NodeStatus.DOWN
        self.save(update_fields=["token_prefix", "token_hash", "token_revoked_at", "status"])
        disconnect_on_commit(self.pk, CLOSE_REVOKED, "node token rotated")
        return plaintext

    def drain(self) -> None:
        """No new calls from now on; the flag survives heartbeats and reconnections."""
        self.drained_at = self.drained_at or timezone.now()
        type(self).objects.filter(pk=self.pk).update(
            drained_at=self.drained_at,
            status=Case(When(status=NodeStatus.UP, then=Value(NodeStatus.DRAINING)),
                        default="status"))
        self.refresh_from_db(fields=["status"])

    def undrain(self) -> None:
        self.drained_at = None
        type(self).objects.filter(pk=self.pk).update(
            drained_at=None,
            status=Case(When(status=NodeStatus.DRAINING, then=Value(NodeStatus.UP)),
                        default="status"))
        self.refresh_from_db(fields=["status"])

    @classmethod
    def authenticate(cls, plaintext: str) -> Node | None:
        """The node whose current, unrevoked token is ``plaintext`` (constant-time check)."""
        prefix = credentials.parse_prefix(plaintext, cls.SECRET_KIND)
        if prefix is None:
            return None
        node = cls.objects.filter(token_prefix=prefix, token_revoked_at__isnull=True).first()
        if node is None or not credentials.secret_matches(plaintext, node.token_hash):
            return None
        return node

    def record_heartbeat(self, load: dict[str, Any], connection: str = "",
                         sample: bool = False) -> bool:
        """Store a heartbeat; the node is up (or draining, while drained). ``sample``: also
        append it to ``load_history`` (the node's connection is its only writer).

        Conditional on the token the connection authenticated with still being the node's
        current, unrevoked one (and, given ``connection``, on it being the node's current
        connection): returns False, changing nothing, when it is not, so a revoked or replaced
        connection can never bring the node back up.
        """
        now = timezone.now()
        rows = type(self).objects.filter(pk=self.pk, token_hash=self.token_hash,
                                         token_revoked_at__isnull=True)
        if connection:
            rows = rows.filter(connection=connection)
        calibration = {field: load[field] for field in ISOLATED_COST_FIELDS
                       if isinstance(load.get(field), int | float) and load[field] > 0}
        history = None
        if sample:
            history = [*(self.load_history or [])[-(LOAD_HISTORY_SAMPLES - 1):],
                       load_sample(load, now)]
            calibration["load_history"] = history
        updated = rows.update(
            last_heartbeat_at=now, last_load=load, **calibration,
            status=Case(When(drained_at__isnull=False, then=Value(NodeStatus.DRAINING)),
                        default=Value(NodeStatus.UP)))
        if updated:
            self.last_heartbeat_at = now
            self.last_load = load
            self.status = NodeStatus.DRAINING if self.drained_at else NodeStatus.UP
            for field, value in calibration.items():
                setattr(self, field, value)
            if history is not None:
                self.load_history = history
        return bool(updated)

    @classmethod
    def stale(cls, timeout: timedelta) -> models.QuerySet[Node]:
        """Nodes believed up whose last heartbeat is older than ``timeout``."""
        cutoff = timezone.now() - timeout
        return cls.objects.filter(status__in=[NodeStatus.UP, NodeStatus.DRAINING]).filter(
            models.Q(last_heartbeat_at__lt=cutoff) | models.Q(last_heartbeat_at__isnull=True)
        )


class PolicyApplyStatus(models.TextChoices):
    PENDING = "pending", "Sent, not acknowledged"
    APPLIED = "applied", "Applied"
    REJECTED = "rejected", "Rejected (rolled back on the node)"


class NodePolicyState(models.Model):
    """Which activation of each policy kind a node runs, as the node acknowledged it.

    An operator sees a swap reach every node here: after an activation every connected node
    moves to ``pending`` for that kind, then to ``applied`` (or ``rejected`` with the node's
    reason, the node having kept its previous policy).
    """

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="policy_states")
    kind = models.CharField(max_length=16)
    activation = models.ForeignKey(
        "policies.PolicyActivation", null=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(
        max_length=16, choices=PolicyApplyStatus.choices, default=PolicyApplyStatus.PENDING
    )
    error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["node", "kind"]
        constraints = [
            models.UniqueConstraint(fields=["node", "kind"], name="node_policy_state_unique")
        ]

    def __str__(self) -> str:
        return f"{self.node} {self.kind}: {self.status}"
