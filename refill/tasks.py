"""django-q2 task functions: thin wrappers that load the pool and call the refill service.

Tasks take ids, not model instances (the payload is pickled into the queue), and return a small
summary that django-q2 stores with the task result.
"""
from __future__ import annotations

import logging

from pool.models import Pool
from refill.models import RefillRun, RefillTrigger
from refill.services import refill_run

logger = logging.getLogger("tokenpool.refill")


def _summary(run: RefillRun) -> dict:
    return {"run_id": run.pk, "pool": run.pool.name, "outcome": run.outcome,
            "requested": run.requested, "inserted": run.inserted}


def refill_scheduled(pool_id: int) -> dict | None:
    """The periodic refill (one django-q2 Schedule per pool, see ``refill.schedules``)."""
    pool = Pool.objects.filter(pk=pool_id).first()
    if pool is None or not pool.refill_enabled:  # the schedule is removed with the pool / the flag
        logger.info("refill_schedule_stale", extra={"pool_id": pool_id})
        return None
    return _summary(refill_run(pool=pool, trigger=RefillTrigger.SCHEDULED))


def refill_on_demand(pool_id: int, lease_token: str, trigger: str = RefillTrigger.LOW_WATERMARK,
                     correlation_id: str | None = None) -> dict | None:
    """Queued by the low-watermark trigger, holding the pool's refill lease ``lease_token``."""
    pool = Pool.objects.filter(pk=pool_id).first()
    if pool is None:
        return None
    return _summary(refill_run(pool=pool, trigger=trigger, lease_token=lease_token,
                               correlation_id=correlation_id))


def refill_manual(pool_id: int, correlation_id: str | None = None) -> dict | None:
    """Queued by the admin action "Refill now"."""
    pool = Pool.objects.filter(pk=pool_id).first()
    if pool is None:
        return None
    return _summary(refill_run(pool=pool, trigger=RefillTrigger.MANUAL, correlation_id=correlation_id))
