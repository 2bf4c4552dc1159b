"""django-q2 Schedules derived from the pools: exactly one per refill-enabled pool, plus the expiry sweep.

The pools are the source of truth; ``schedules_sync`` makes the Schedule rows match them and is
called from the Pool ``post_save``/``post_delete`` signals (inside the admin's transaction, so a pool
edit and its schedule commit together) and after ``migrate``. django-q2's table has no unique
constraint on ``name``, so every sync runs under a transaction-scoped advisory lock: two syncs never
interleave, and a duplicate (say, one added by hand in the admin) is deleted by the next sync.
"""
from __future__ import annotations

import ast
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from django_q.models import Schedule

from pool.models import Pool

logger = logging.getLogger("tokenpool.refill")

REFILL_SCHEDULE_PREFIX = "refill:"
REFILL_SCHEDULE_FUNC = "refill.tasks.refill_scheduled"
EXPIRY_SCHEDULE_NAME = "pool:reservations_expire"
EXPIRY_SCHEDULE_FUNC = "pool.tasks.reservations_expire_task"
EXPIRY_INTERVAL_MINUTES = 1
# Advisory lock key of the sync (ASCII "schd"); distinct from the refill lock's first key.
SCHEDULE_LOCK_CLASS = 0x73636864


@dataclass
class SyncResult:
    created: int = 0
    updated: int = 0
    deleted: int = 0


def refill_schedule_name(pool: Pool) -> str:
    return f"{REFILL_SCHEDULE_PREFIX}{pool.name}"


def _pool_id_of(schedule: Schedule) -> int | None:
    try:
        kwargs = ast.literal_eval(schedule.kwargs or "{}")
        return int(kwargs.get("pool_id")) if isinstance(kwargs, dict) else None
    except (ValueError, SyntaxError, TypeError):
        return None


def schedules_sync(*, pool: Pool | None = None) -> SyncResult:
    """Make the Schedule rows match the pools (all of them, or only ``pool``'s).

    Per refill-enabled pool: one MINUTES schedule named ``refill:<pool>`` every
    ``refill_interval_minutes``. A changed interval applies at once: the next run is never further
    away than one new interval. A newly enabled pool is refilled on the scheduler's next tick. Disabled,
    deleted or renamed pools lose their old schedule. The expiry sweep schedule always exists."""
    result = SyncResult()
    now = timezone.now()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, 0)", [SCHEDULE_LOCK_CLASS])

        desired = _desired(pool)

        # What exists and is ours to manage in this scope.
        candidates = Schedule.objects.select_for_update().filter(
            Q(name__startswith=REFILL_SCHEDULE_PREFIX) | Q(name=EXPIRY_SCHEDULE_NAME)
        ).order_by("id")
        seen: set[str] = set()
        for schedule in candidates:
            if schedule.name == EXPIRY_SCHEDULE_NAME:
                if EXPIRY_SCHEDULE_NAME in seen:
                    schedule.delete()
                    result.deleted += 1
                    continue
                seen.add(EXPIRY_SCHEDULE_NAME)
                result.updated += _apply(schedule, func=EXPIRY_SCHEDULE_FUNC, kwargs=None,
                                         minutes=EXPIRY_INTERVAL_MINUTES, now=now)
                continue
            in_scope = pool is None or schedule.name == refill_schedule_name(pool) \
                or _pool_id_of(schedule) == pool.pk
            if not in_scope:
                continue
            target = desired.get(schedule.name)
            if target is None or schedule.name in seen or _pool_id_of(schedule) not in (None, target.pk):
                schedule.delete()
                result.deleted += 1
                continue
            seen.add(schedule.name)
            result.updated += _apply(schedule, func=REFILL_SCHEDULE_FUNC, kwargs={"pool_id": target.pk},
                                     minutes=target.refill_interval_minutes, now=now)

        result.created += _create_missing(desired=desired, seen=seen, now=now)
    if result.created or result.deleted:
        logger.info("schedules_synced", extra={"schedules_created": result.created,
                                               "schedules_updated": result.updated,
                                               "schedules_deleted": result.deleted})
    return result


def _desired(pool: Pool | None) -> dict[str, Pool]:
    """What should exist, by name: the refill-enabled pools (all of them, or only ``pool``)."""
    if pool is None:
        pools = list(Pool.objects.filter(refill_enabled=True))
    else:
        current = Pool.objects.filter(pk=pool.pk, refill_enabled=True).first()
        pools = [current] if current else []
    return {refill_schedule_name(p): p for p in pools}


def _create_missing(*, desired: dict[str, Pool], seen: set[str], now: datetime) -> int:
    """Create the desired schedules not ``seen`` (and the expiry sweep's); return how many."""
    created = 0
    for name, target in desired.items():
        if name not in seen:
            Schedule.objects.create(
                name=name, func=REFILL_SCHEDULE_FUNC, kwargs=repr({"pool_id": target.pk}),
                schedule_type=Schedule.MINUTES, minutes=target.refill_interval_minutes,
                repeats=-1, next_run=now,
            )
            created += 1
    if EXPIRY_SCHEDULE_NAME not in seen:
        Schedule.objects.create(
            name=EXPIRY_SCHEDULE_NAME, func=EXPIRY_SCHEDULE_FUNC, schedule_type=Schedule.MINUTES,
            minutes=EXPIRY_INTERVAL_MINUTES, repeats=-1, next_run=now,
        )
        created += 1
    return created


def _apply(schedule: Schedule, *, func: str, kwargs: dict | None, minutes: int, now) -> int:
    """Bring one existing schedule in line; return 1 if it changed."""
    wanted_kwargs = repr(kwargs) if kwargs is not None else None
    changed = []
    if schedule.func != func:
        schedule.func = func
        changed.append("func")
    if (schedule.kwargs or None) != wanted_kwargs:
        schedule.kwargs = wanted_kwargs
        changed.append("kwargs")
    if schedule.args:
        schedule.args = None
        changed.append("args")
    if schedule.schedule_type != Schedule.MINUTES:
        schedule.schedule_type = Schedule.MINUTES
        changed.append("schedule_type")
    if schedule.minutes != minutes:
        schedule.minutes = minutes
        # The new interval counts from now; never leave next_run further out than one interval.
        schedule.next_run = min(schedule.next_run or now, now + timedelta(minutes=minutes))
        changed += ["minutes", "next_run"]
    if schedule.repeats != -1:
        schedule.repeats = -1
        changed.append("repeats")
    if changed:
        schedule.save(update_fields=changed)
        return 1
    return 0
