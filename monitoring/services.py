"""Writes of the monitoring room: pool snapshots, alert acknowledgement, config-change audit."""
from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, cast

from django.db import transaction
from django.utils import timezone

from monitoring.models import ConsumerAdoption, PoolAlert, PoolConfigChange, PoolSnapshot
from monitoring.selectors import pair_counts, pools_tome_calls
from pool.models import Pool

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser

# Tunables whose edits are audited (and validated by monitoring.pool_config.PoolConfigForm).
AUDITED_POOL_FIELDS = ("target_size", "low_watermark", "critical_watermark", "batch_size",
                       "refill_interval_minutes", "reservation_ttl", "refill_enabled",
                       "ns1_namespace", "ns2_namespace", "environment")


def pool_snapshots_take(*, now: datetime | None = None) -> list[PoolSnapshot]:
    """Store one ``PoolSnapshot`` per pool from the trigger-kept pair counters (no count of the pair
    table: one small SUM for all pools, however many pairs there are)."""
    now = now or timezone.now()
    pools = list(Pool.objects.all())
    if not pools:
        return []
    counts = pair_counts(pools=pools)
    tome_calls = pools_tome_calls(direct_pairs={pk: c.direct for pk, c in counts.items()})
    snapshots = []
    for pool in pools:
        c = counts[pool.pk]
        snapshots.append(PoolSnapshot(
            pool=pool, taken_at=now, available=c.available, reserved=c.reserved, used=c.used, retired=c.retired,
            reserved_total=c.reservations_total, reserved_direct=c.direct,
            tome_calls_total=tome_calls[pool.pk],
        ))
    return cast(list[PoolSnapshot], PoolSnapshot.objects.bulk_create(snapshots))


def pool_snapshots_prune(*, older_than: datetime) -> int:
    """Drop snapshots older than the dashboard's longest range (keeps the table small)."""
    deleted, _ = PoolSnapshot.objects.filter(taken_at__lt=older_than).delete()
    return cast(int, deleted)


def alert_acknowledge(*, alert: PoolAlert, user: AbstractBaseUser) -> bool:
    """Mark an alert as seen by ``user``; False when it was already acknowledged."""
    updated = PoolAlert.objects.filter(pk=alert.pk, acknowledged_at__isnull=True).update(
        acknowledged_by=user, acknowledged_at=timezone.now())
    return bool(updated)


def pool_config_changes_record(*, pool: Pool, user: AbstractBaseUser, old: dict[str, object],
                               new: dict[str, object]) -> list[PoolConfigChange]:
    """One audit row per tunable whose value differs between ``old`` and ``new``.

    Called inside the admin's save transaction, so the edit and its audit commit together."""
    rows = [
        PoolConfigChange(pool=pool, changed_by=user, field=name,
                         old=None if old.get(name) is None else str(old.get(name)),
                         new=None if new.get(name) is None else str(new.get(name)))
        for name in AUDITED_POOL_FIELDS
        if name in new and old.get(name) != new.get(name)
    ]
    if rows:
        with transaction.atomic():
            PoolConfigChange.objects.bulk_create(rows)
    return rows


def adoption_plan_set(*, consumer_id: int, planned_adoption_date: date | None, user: AbstractBaseUser,
                      note: str = "") -> ConsumerAdoption:
    """Set (or clear, with None) the date a project lead plans for a consumer to be on the pool."""
    plan, _ = ConsumerAdoption.objects.update_or_create(
        consumer_id=consumer_id,
        defaults={"planned_adoption_date": planned_adoption_date, "note": note, "updated_by": user},
    )
    return cast(ConsumerAdoption, plan)
