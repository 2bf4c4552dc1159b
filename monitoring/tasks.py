"""django-q2 task entry points of the monitoring room (scheduled by ``monitoring.schedules``)."""
from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from monitoring.alerts import alerts_evaluate
from monitoring.services import pool_snapshots_prune, pool_snapshots_take
from pool.counters import pair_counters_compact
from tokenpool_tome.correlation import correlation_scope

logger = logging.getLogger("tokenpool.monitoring")


def snapshots_take_task() -> int:
    """Record one PoolSnapshot per pool, prune those older than the retention, and fold the pair
    counter rows appended since the last fold."""
    with correlation_scope():
        folded = pair_counters_compact()
        snapshots = pool_snapshots_take()
        pruned = pool_snapshots_prune(
            older_than=timezone.now() - timedelta(days=settings.MONITORING_SNAPSHOT_RETENTION_DAYS))
        logger.info("pool_snapshots_taken", extra={"snapshots": len(snapshots), "pruned": pruned,
                                                       "counter_rows_folded": folded})
        return len(snapshots)


def alerts_evaluate_task() -> dict[str, int]:
    with correlation_scope():
        # Every minute: the triggers append two rows per reservation statement (pool migration 0006),
        # so the counters are folded more often than snapshots are taken; reads stay a small SUM.
        pair_counters_compact()
        result = alerts_evaluate()
        return {"opened": len(result.opened), "resolved": len(result.resolved)}
