"""The refill room's listeners (imported once by ``RefillConfig.ready``): the low-watermark trigger on each
committed reservation, and the django-q2 Schedules kept in step with the pools."""
from __future__ import annotations

import logging

from django.db import DatabaseError, connection
from django.db.models.signals import post_delete, post_migrate, post_save
from django.dispatch import receiver

from pool.models import Pool
from pool.signals import pairs_reserved
from refill.schedules import schedules_sync
from refill.triggers import on_pairs_reserved

logger = logging.getLogger("tokenpool.refill")


@receiver(pairs_reserved, dispatch_uid="refill_low_watermark_on_reservation")
def _pairs_reserved(*, pool: Pool, count: int, **kwargs) -> None:
    on_pairs_reserved(pool=pool, count=count)


@receiver(post_save, sender=Pool, dispatch_uid="refill_schedule_on_pool_save")
def _pool_saved(*, instance: Pool, raw: bool = False, **kwargs) -> None:
    if raw:  # loaddata: the schedules are synced after migrate / by the next edit
        return
    # In the saving transaction: the pool edit and its schedule commit (or roll back) together.
    schedules_sync(pool=instance)


@receiver(post_delete, sender=Pool, dispatch_uid="refill_schedule_on_pool_delete")
def _pool_deleted(*, instance: Pool, **kwargs) -> None:
    schedules_sync(pool=instance)


@receiver(post_migrate, dispatch_uid="refill_schedules_after_migrate")
def _after_migrate(*, app_config, using: str = "default", plan=None, **kwargs) -> None:
    if app_config.label != "refill":
        return
    tables = set(connection.introspection.table_names())
    if "django_q_schedule" not in tables or Pool._meta.db_table not in tables:  # noqa: SLF001 - Model._meta is Django's documented Options API
        return  # a partial migrate (or a migrate backwards): nothing to sync against yet
    try:
        schedules_sync()
    except DatabaseError:
        # e.g. migrating backwards past a Pool column; the next full migrate syncs again
        logger.warning("schedules_sync_after_migrate_failed", exc_info=True)
