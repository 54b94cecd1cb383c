"""GPU nodes that run a node agent (vLLM with SAGA hooks, or the simulated engine)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import models
from django.utils import timezone

from controlplane import credentials


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
    address = models.URLField(blank=True, help_text="Base URL of the node's OpenAI-compatible API.")
    status = models.CharField(
        max_length=16, choices=NodeStatus.choices, default=NodeStatus.PENDING, editable=False
    )
    last_heartbeat_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_load = models.JSONField(default=dict, blank=True, editable=False)
    # NULL, not "", before a token is issued: the column is unique and "" would collide.
    token_prefix = models.CharField(  # noqa: DJ001
        max_length=credentials.PREFIX_CHARS, unique=True, null=True, editable=False
    )
    token_hash = models.CharField(max_length=64, blank=True, editable=False)
    token_revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
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
        self.token_revoked_at = timezone.now()
        self.save(update_fields=["token_revoked_at"])

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

    def record_heartbeat(self, load: dict[str, Any]) -> None:
        now = timezone.now()
        self.last_heartbeat_at = now
        self.last_load = load
        self.status = NodeStatus.UP if self.status != NodeStatus.DRAINING else self.status
        self.save(update_fields=["last_heartbeat_at", "last_load", "status"])

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
