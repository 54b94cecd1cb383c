"""Keep node agents' view of tenants (fair-share weights, SLOs) current after admin edits."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from controlplane.policies.distribution import NODES_GROUP
from controlplane.tenants.models import Tenant


@receiver(post_save, sender=Tenant)
@receiver(post_delete, sender=Tenant)
def push_tenants_to_nodes(sender: type[Tenant], **kwargs: Any) -> None:
    def send() -> None:
        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(layer.group_send)(NODES_GROUP, {"type": "tenants.changed"})

    transaction.on_commit(send)
