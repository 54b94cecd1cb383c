"""Counting quota rejections (429s) per tenant, quota and second, in PostgreSQL.

Every process that refuses a request adds to the same row, so the series and ``/metrics`` see
the cluster-wide count. Counting never turns a 429 into another error: a database that does not
answer loses the count (logged), not the response.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from controlplane.slo.models import QuotaRejection

log = logging.getLogger("saga.slo")


def record_rejection(tenant_id: int, quota: str, at: datetime | None = None) -> None:
    second = (at or timezone.now()).replace(microsecond=0)
    rows = QuotaRejection.objects.filter(tenant_id=tenant_id, quota=quota, second=second)
    try:
        for _attempt in range(2):
            try:
                with transaction.atomic():
                    if rows.update(count=F("count") + 1):
                        return
                    QuotaRejection.objects.create(tenant_id=tenant_id, quota=quota,
                                                  second=second, count=1)
                    return
            except IntegrityError:
                continue  # another process created the row first: add to it
    except DatabaseError as exc:
        log.warning("quota rejection of tenant %s (%s) not counted: %s", tenant_id, quota, exc)
