"""The pool's refill lease: at most one on-demand refill queued or running per pool, and enqueueing.

The lease row (``RefillLease``, one per pool) says "queued", "running" or "cooldown" until it
expires; whoever wins the one-statement upsert enqueues the task."""
from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any, cast

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django_q.tasks import async_task

from pool.models import Pool
from refill.models import RefillLease, RefillTrigger
from refill.services.lock import REFILL_LOCK_CLASS
from tokenpool_tome.correlation import get_correlation_id

logger = logging.getLogger("tokenpool.refill")

# Task paths as django-q2 stores them (strings, so enqueuing never imports the task module).
TASK_ON_DEMAND = "refill.tasks.refill_on_demand"
TASK_MANUAL = "refill.tasks.refill_manual"


def lease_try_acquire(*, pool_id: int, seconds: float) -> uuid.UUID | None:
    """Take the pool's refill lease if nobody holds a live one; return its token, else ``None``.

    One statement, so two processes racing for it cannot both win: the loser's INSERT waits for
    the winner's row and its ``WHERE`` then sees a live lease.

    A "running" lease whose holder is gone is taken over at once, whatever its expiry: a run holds
    the pool's advisory lock for its whole life (it writes "running" only once it has the lock, and
    finishes the lease before letting go), and the lock dies with the run's database session. So a
    "running" lease with nobody holding the lock belongs to a killed worker (issue 20: the next
    refill used to wait up to REFILL_RUN_LEASE_SECONDS, two minutes, below the low watermark)."""
    token = uuid.uuid4()
    return token if _lease_upsert(pool_id=pool_id, token=token, state="queued", seconds=seconds,
                                  only_if_expired=True) else None


# The lease row may be replaced when it has expired, or when it says "running" and no session holds
# the pool's refill lock (pg_locks: the two-key advisory lock of refill/services/lock.py).
_RECLAIMABLE = f"""
    WHERE l.expires_at < now() OR (l.state = 'running' AND NOT EXISTS (
        SELECT 1 FROM pg_locks k
         WHERE k.locktype = 'advisory' AND k.granted AND k.classid = {REFILL_LOCK_CLASS}::bigint::oid
           AND k.objid = l.pool_id::bigint::oid AND k.objsubid = 2
           AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())))
"""


def lease_take_running(*, pool_id: int, token: uuid.UUID) -> None:
    """The run holds the pool's lock now: the lease says "running" under this run's token, so no
    trigger enqueues another refill while it works (whoever queued the lease before)."""
    _lease_upsert(pool_id=pool_id, token=token, state="running",
                  seconds=settings.REFILL_RUN_LEASE_SECONDS, only_if_expired=False)


def _lease_upsert(*, pool_id: int, token: uuid.UUID, state: str, seconds: float, only_if_expired: bool) -> bool:
    """Write the pool's lease row; with ``only_if_expired`` an existing live lease is left alone.
    Returns whether the row is now ours."""
    # A fresh "queued" lease forgets the old task id; a run taking over keeps the id of its task.
    guard, task_reset = (_RECLAIMABLE, ", task_id = ''") if only_if_expired else ("", "")
    table = RefillLease._meta.db_table  # noqa: SLF001 - Model._meta is Django's documented Options API
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} AS l
                (pool_id, token, state, acquired_at, expires_at, task_id)
            VALUES (%s, %s, %s, now(), now() + make_interval(secs => %s), '')
            ON CONFLICT (pool_id) DO UPDATE
                SET token = EXCLUDED.token, state = EXCLUDED.state, acquired_at = EXCLUDED.acquired_at,
                    expires_at = EXCLUDED.expires_at{task_reset}
                {guard}
            RETURNING token
            """,
            [pool_id, token, state, float(seconds)],
        )
        return cursor.fetchone() is not None


def lease_finish(*, pool_id: int, token: uuid.UUID, cooldown_seconds: float) -> None:
    """Drop our lease (the next low-watermark reservation may enqueue again at once), or turn it
    into a cool-down after a failure so a TOME outage is not hammered by one refill per second."""
    mine = RefillLease.objects.filter(pool_id=pool_id, token=token)
    if cooldown_seconds > 0:
        now = timezone.now()
        mine.update(state="cooldown", acquired_at=now, expires_at=now + timedelta(seconds=cooldown_seconds))
    else:
        mine.delete()


def lease_finish_quietly(**kwargs: Any) -> None:
    try:
        lease_finish(**kwargs)
    except Exception:
        logger.exception("refill_lease_release_failed")


def refill_request(*, pool: Pool, trigger: str = RefillTrigger.LOW_WATERMARK) -> str | None:
    """Enqueue an on-demand refill of ``pool`` unless one is already queued or running.

    Returns the django-q task id, or ``None`` when de-duplicated. The lease and the queue message
    are written in one transaction, so with the ORM broker either both exist or neither does;
    with Redis a lost message only costs the lease's expiry time."""
    seconds = settings.REFILL_QUEUE_LEASE_SECONDS
    with transaction.atomic():
        token = lease_try_acquire(pool_id=pool.pk, seconds=seconds)
        if token is None:
            return None
        task_id = async_task(TASK_ON_DEMAND, pool.pk, str(token), trigger=trigger,
                             correlation_id=get_correlation_id(), task_name=f"refill:{pool.name}:{trigger}",
                             group=f"refill:{pool.name}")
        RefillLease.objects.filter(pool_id=pool.pk, token=token).update(task_id=str(task_id or ""))
    logger.info("refill_enqueued", extra={"pool": pool.name, "trigger": trigger, "task_id": task_id})
    return cast(str | None, task_id)


def refill_enqueue_manual(*, pool: Pool) -> str:
    """Queue a manual refill (admin "Refill now"). Not de-duplicated: the advisory lock keeps two
    of them from running at once, and the operator asked for it explicitly."""
    task_id = async_task(TASK_MANUAL, pool.pk, correlation_id=get_correlation_id(),
                         task_name=f"refill:{pool.name}:manual", group=f"refill:{pool.name}")
    logger.info("refill_enqueued", extra={"pool": pool.name, "trigger": "manual", "task_id": task_id})
    return cast(str, task_id)
