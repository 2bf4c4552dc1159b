"""The monitoring room's django-q2 Schedules: pool snapshots and alert evaluation.

Kept apart from ``refill/schedules.py`` (which owns the per-pool refill schedules): each
room manages only the rows named with its own prefix. Idempotent; runs after every ``migrate``.
"""
from __future__ import annotations

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django_q.models import Schedule

SNAPSHOT_SCHEDULE_NAME = "monitoring:snapshots"
SNAPSHOT_SCHEDULE_FUNC = "monitoring.tasks.snapshots_take_task"
ALERTS_SCHEDULE_NAME = "monitoring:alerts"
ALERTS_SCHEDULE_FUNC = "monitoring.tasks.alerts_evaluate_task"
# Advisory lock key of this sync (ASCII "mons"): two concurrent migrates never create duplicates.
SCHEDULE_LOCK_CLASS = 0x6D6F6E73


def monitoring_schedules_ensure() -> int:
    """Create or update the two schedules (one row each, duplicates removed); returns rows written."""
    wanted = {
        SNAPSHOT_SCHEDULE_NAME: (SNAPSHOT_SCHEDULE_FUNC, settings.MONITORING_SNAPSHOT_MINUTES),
        ALERTS_SCHEDULE_NAME: (ALERTS_SCHEDULE_FUNC, settings.ALERT_EVALUATE_MINUTES),
    }
    written = 0
    now = timezone.now()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, 0)", [SCHEDULE_LOCK_CLASS])
        for name, (func, minutes) in wanted.items():
            rows = list(Schedule.objects.select_for_update().filter(name=name).order_by("id"))
            for extra in rows[1:]:
                extra.delete()
                written += 1
            if not rows:
                Schedule.objects.create(name=name, func=func, schedule_type=Schedule.MINUTES,
                                        minutes=minutes, repeats=-1, next_run=now)
                written += 1
                continue
            schedule = rows[0]
            if (schedule.func, schedule.schedule_type, schedule.minutes, schedule.repeats) != (
                    func, Schedule.MINUTES, minutes, -1):
                schedule.func, schedule.schedule_type, schedule.minutes, schedule.repeats = (
                    func, Schedule.MINUTES, minutes, -1)
                schedule.next_run = min(schedule.next_run or now, now)
                schedule.save()
                written += 1
    return written
