"""Writes of the monitoring room: pool snapshots, alert acknowledgement, config-change audit."""
from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, cast

from django.db import connection, transaction
from django.utils import timezone

from monitoring.models import ConsumerAdoption, PoolAlert, PoolConfigChange, PoolSnapshot
from monitoring.selectors import ANCHOR_MARGIN, pair_anchor_id, pool_tome_calls
from pool.models import PairSource, PairStatus, Pool, TokenPair

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser

# Tunables whose edits are audited (and validated by monitoring.pool_config.PoolConfigForm).
AUDITED_POOL_FIELDS = ("target_size", "low_watermark", "critical_watermark", "batch_size",
                       "refill_interval_minutes", "reservation_ttl", "refill_enabled",
                       "ns1_namespace", "ns2_namespace", "environment")


def pool_snapshots_take(*, now: datetime | None = None) -> list[PoolSnapshot]:
    """Count every pool's pairs once and store one ``PoolSnapshot`` per pool.

    One sequential scan of the pair table for all pools together (the only full scan monitoring
    makes; its cost on a large table is in docs/operations.md). ``anchor_id`` pins which rows the
    ``rows_*`` columns cover, so later reads count only the rows inserted after it."""
    now = now or timezone.now()
    pools = list(Pool.objects.all())
    if not pools:
        return []
    anchor = pair_anchor_id(before=now - ANCHOR_MARGIN)
    table = TokenPair._meta.db_table  # noqa: SLF001 - Model._meta is Django's documented Options API
    per_pool: dict[int, dict[str, int]] = {
        p.pk: {"AVAILABLE": 0, "RESERVED": 0, "USED": 0, "RETIRED": 0, "direct": 0,
               "rows_pool": 0, "rows_direct": 0} for p in pools}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT pool_id, status, source, count(*), count(*) FILTER (WHERE id <= %s) "  # noqa: S608
            f"FROM {table} GROUP BY 1, 2, 3", [anchor])
        for pool_id, status, source, n, n_anchored in cursor.fetchall():
            counts = per_pool.get(pool_id)
            if counts is None:  # a pool created since the list above
                continue
            counts[status] += n
            if source == PairSource.DIRECT:
                counts["direct"] += n
                counts["rows_direct"] += n_anchored
            else:
                counts["rows_pool"] += n_anchored
    snapshots = []
    for pool in pools:
        c = per_pool[pool.pk]
        reserved_total = c["RESERVED"] + c["USED"] + c["RETIRED"]
        snapshots.append(PoolSnapshot(
            pool=pool, taken_at=now, available=c[PairStatus.AVAILABLE], reserved=c[PairStatus.RESERVED],
            used=c[PairStatus.USED], retired=c[PairStatus.RETIRED], reserved_total=reserved_total,
            reserved_direct=c["direct"], tome_calls_total=pool_tome_calls(pool=pool, direct_pairs=c["direct"]),
            anchor_id=anchor, rows_pool=c["rows_pool"], rows_direct=c["rows_direct"],
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
