"""Monitoring wiring (imported once by ``MonitoringConfig.ready``): TOME call metrics, the onboarding summary's
measured TOME calls, schedules after migrate."""
from __future__ import annotations

import logging

from django.db import DatabaseError, connection
from django.db.models.signals import post_migrate
from django.dispatch import receiver

from monitoring.metrics import record_leases_expired, record_tome_call
from monitoring.numbers import refill_pairs_per_hour
from monitoring.schedules import monitoring_schedules_ensure
from monitoring.selectors import pair_counts, prefetch_calls_measured
from onboarding.signals import impact_measurement_requested, pool_fill_requested
from pool.models import Pool
from pool.signals import leases_expired
from tome.provider import tome_call

logger = logging.getLogger("tokenpool.monitoring")


@receiver(tome_call, dispatch_uid="monitoring_count_tome_calls")
def _tome_call(*, record, **kwargs) -> None:  # noqa: ANN001 - a tokenpool_tome.client.CallRecord
    record_tome_call(record)


@receiver(leases_expired, dispatch_uid="monitoring_count_expired_leases")
def _leases_expired(*, by_consumer: dict[str, int], **kwargs) -> None:
    record_leases_expired(by_consumer)


@receiver(impact_measurement_requested, dispatch_uid="monitoring_measured_prefetch_calls")
def _impact_measurement(**kwargs) -> tuple[int, float] | None:
    return prefetch_calls_measured()


@receiver(pool_fill_requested, dispatch_uid="monitoring_pool_fill")
def _pool_fill(*, environment: str, **kwargs) -> list[dict[str, object]]:
    pools = list(Pool.objects.filter(environment=environment).order_by("name"))
    counts = pair_counts(pools=pools)
    answer: list[dict[str, object]] = []
    for pool in pools:
        rate, basis = refill_pairs_per_hour(pool_id=pool.pk)
        answer.append({"pool": pool.name, "target": pool.target_size, "available": counts[pool.pk].available,
                       "pairs_per_hour": rate, "basis": basis})
    return answer


@receiver(post_migrate, dispatch_uid="monitoring_schedules_after_migrate")
def _after_migrate(*, app_config, **kwargs) -> None:  # noqa: ANN001
    if app_config.label != "monitoring":
        return
    if "django_q_schedule" not in set(connection.introspection.table_names()):
        return
    try:
        monitoring_schedules_ensure()
    except DatabaseError:
        logger.warning("monitoring_schedules_after_migrate_failed", exc_info=True)
