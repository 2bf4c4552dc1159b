"""Reads for /metrics, the dashboard and the alert evaluator.

Nothing here counts the pair table: pairs per (pool, status, source) come from the counters that
PostgreSQL keeps with every write (``pool/counters.py``; exact, a SUM over a table of a few hundred
rows at any pair-table size), and rates over time come from the differences between those counters
now and the ``PoolSnapshot`` nearest the window start (docs/architecture.md, "Pair counters").
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from django.db.models import Count, Sum
from django.utils import timezone

from monitoring.models import PoolAlert, PoolSnapshot
from monitoring.numbers import (
    DIRECT_CALLS_PER_PAIR,
    LIVE_CALLS_PER_CARD,
    RATE_WINDOW_HOURS,
    consumption_per_hour,
    hours_to_empty,
)
from pool.counters import pair_counter_totals
from pool.models import PairSource, PairStatus, Pool
from refill.models import RefillOutcome, RefillRun

STATUSES = [s.value for s in PairStatus]
SOURCES = [s.value for s in PairSource]


@dataclass
class PairCounts:
    by_status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    # Pairs ever handed out by source ("pool" | "direct"): every non-AVAILABLE pair was reserved once.
    reservations_by_source: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))

    @property
    def available(self) -> int:
        return self.by_status[PairStatus.AVAILABLE]

    @property
    def reserved(self) -> int:
        return self.by_status[PairStatus.RESERVED]

    @property
    def used(self) -> int:
        return self.by_status[PairStatus.USED]

    @property
    def retired(self) -> int:
        return self.by_status[PairStatus.RETIRED]

    @property
    def reservations_total(self) -> int:
        return sum(self.reservations_by_source.values())

    @property
    def direct(self) -> int:
        return self.reservations_by_source[PairSource.DIRECT]


def pair_counts(*, pools: list[Pool]) -> dict[int, PairCounts]:
    """Counts per pool id (every pool of ``pools`` is present), from the trigger-kept counters."""
    result = {p.pk: PairCounts() for p in pools}
    for pool_id, keys in pair_counter_totals(pool_ids=list(result)).items():
        counts = result[pool_id]
        for (status, source), n in keys.items():
            counts.by_status[status] += n
            if status != PairStatus.AVAILABLE:
                counts.reservations_by_source[source] += n
    return result


def pool_snapshots_latest(*, pool_ids: list[int], before: datetime | None = None) -> dict[int, PoolSnapshot]:
    qs = PoolSnapshot.objects.filter(pool_id__in=pool_ids)
    if before is not None:
        qs = qs.filter(taken_at__lte=before)
    return {s.pool_id: s for s in qs.order_by("pool_id", "-taken_at").distinct("pool_id")}


def refill_run_counts() -> dict[int, dict[str, int]]:
    """pool id -> outcome -> finished runs (every outcome present, so counters start at 0)."""
    outcomes = [o.value for o in RefillOutcome if o != RefillOutcome.RUNNING]
    result: dict[int, dict[str, int]] = {}
    for pool_id in Pool.objects.values_list("pk", flat=True):
        result[pool_id] = dict.fromkeys(outcomes, 0)
    # "running" is left out: a counter may never go down, and a running run later changes outcome.
    for pool_id, outcome, n in (RefillRun.objects.exclude(outcome=RefillOutcome.RUNNING)
                                .values_list("pool_id", "outcome").annotate(n=Count("*")).order_by()):
        result.setdefault(pool_id, dict.fromkeys(outcomes, 0))[outcome] = n
    return result


@dataclass
class MetricsData:
    pools: list[Pool]
    counts: dict[int, PairCounts]
    refill_runs: dict[int, dict[str, int]]
    open_alerts: list[tuple[str, str, str, int]]
    numbers: dict[int, PoolNumbers]


def metrics_snapshot() -> MetricsData:
    pools = list(Pool.objects.order_by("name"))
    open_alerts = [
        (pool_name, condition, severity, n)
        for pool_name, condition, severity, n in (
            PoolAlert.objects.filter(resolved_at__isnull=True)
            .values_list("pool__name", "condition", "severity").annotate(n=Count("*")).order_by())
    ]
    counts = pair_counts(pools=pools)
    return MetricsData(pools=pools, counts=counts, refill_runs=refill_run_counts(), open_alerts=open_alerts,
                       numbers=pools_numbers(pool_ids=[p.pk for p in pools], counts=counts))


# ---- dashboard ------------------------------------------------------------------------------


def pool_consumption_rates(*, pool: Pool, windows: tuple[int, ...] = (1, 24),
                           counts: PairCounts | None = None) -> dict[int, float]:
    """Pairs handed out per hour over each window (hours), any source: reservations ever now (the
    counters) minus those of the snapshot nearest the window start (the oldest one while the history
    is shorter), divided by the time actually between them; 0 until a snapshot is a minute old."""
    counts_now = {pool.pk: counts or pair_counts(pools=[pool])[pool.pk]}
    return pools_consumption_rates(pool_ids=[pool.pk], counts=counts_now, windows=windows)[pool.pk]


def pools_consumption_rates(*, pool_ids: list[int], counts: dict[int, PairCounts],
                            windows: tuple[int, ...] = (1, 24)) -> dict[int, dict[int, float]]:
    """``pool_consumption_rates`` of many pools with one query per window (the /metrics scrape)."""
    now = timezone.now()
    oldest = {s.pool_id: s for s in PoolSnapshot.objects.filter(pool_id__in=pool_ids)
              .order_by("pool_id", "taken_at").distinct("pool_id")}
    rates: dict[int, dict[int, float]] = {pk: {} for pk in pool_ids}
    for h in windows:
        nearest = pool_snapshots_latest(pool_ids=pool_ids, before=now - timedelta(hours=h))
        for pk in pool_ids:
            snap = nearest.get(pk) or oldest.get(pk)
            rates[pk][h] = consumption_per_hour(
                reservations_now=counts[pk].reservations_total,
                reservations_then=snap.reserved_total if snap else 0,
                hours=(now - snap.taken_at).total_seconds() / 3600 if snap else 0.0)
    return rates


def pool_refill_rate(*, pool: Pool, hours: float) -> float:
    """Pairs inserted by refill runs per hour over the last ``hours`` hours."""
    return pools_refill_rates(pool_ids=[pool.pk], hours=hours)[pool.pk]


def pools_refill_rates(*, pool_ids: list[int], hours: float) -> dict[int, float]:
    since = timezone.now() - timedelta(hours=hours)
    inserted = dict(RefillRun.objects.filter(pool_id__in=pool_ids, started_at__gte=since)
                    .values_list("pool_id").annotate(n=Sum("inserted")).order_by())
    return {pk: (inserted.get(pk) or 0) / hours for pk in pool_ids}


def pools_tome_calls(*, direct_pairs: dict[int, int]) -> dict[int, int]:
    """TOME calls made on behalf of each pool (pool id -> its direct pairs): every refill run's calls
    plus the direct fallback's; one query for all pools."""
    refill = dict(RefillRun.objects.filter(pool_id__in=list(direct_pairs)).values_list("pool_id")
                  .annotate(n=Sum("tome_calls")).order_by())
    return {pk: int(refill.get(pk) or 0) + DIRECT_CALLS_PER_PAIR * direct for pk, direct in direct_pairs.items()}


@dataclass(frozen=True)
class PoolNumbers:
    """The last-hour figures of one pool that the dashboard's tiles and /metrics both show."""
    consumption_per_hour: float
    refill_per_hour: float
    hours_to_empty: float | None
    tome_calls_actual: int
    tome_calls_live: int


def pools_numbers(*, pool_ids: list[int], counts: dict[int, PairCounts]) -> dict[int, PoolNumbers]:
    consumption = pools_consumption_rates(pool_ids=pool_ids, counts=counts, windows=(RATE_WINDOW_HOURS,))
    refill = pools_refill_rates(pool_ids=pool_ids, hours=RATE_WINDOW_HOURS)
    tome_calls = pools_tome_calls(direct_pairs={pk: counts[pk].direct for pk in pool_ids})
    result = {}
    for pk in pool_ids:
        rate = consumption[pk][RATE_WINDOW_HOURS]
        result[pk] = PoolNumbers(
            consumption_per_hour=rate, refill_per_hour=refill[pk],
            hours_to_empty=hours_to_empty(available=counts[pk].available, consumption_per_hour=rate,
                                          refill_per_hour=refill[pk]),
            tome_calls_actual=tome_calls[pk],
            tome_calls_live=LIVE_CALLS_PER_CARD * counts[pk].used)
    return result


@dataclass
class ChartPoint:
    at: datetime
    available: int
    consumption_per_hour: float | None  # pairs/hour since the previous point; None for the first


def _trailing_rate(rows: list[tuple[datetime, int, int]], times: list[datetime], i: int) -> float | None:
    """Reservations per hour over the ``RATE_WINDOW_HOURS`` before row ``i`` (the tile's definition,
    ``consumption_per_hour``); over the time since the oldest row when there is less history than
    that; None for the oldest row. ``times``: the rows' times, for the bisection."""
    at, _available, total = rows[i]
    if i == 0:
        return None
    base = rows[max(bisect.bisect_right(times, at - timedelta(hours=RATE_WINDOW_HOURS)) - 1, 0)]
    return consumption_per_hour(reservations_now=total, reservations_then=base[2],
                                hours=(at - base[0]).total_seconds() / 3600)


def pool_chart_points(*, pool: Pool, hours: int, max_points: int = 288) -> list[ChartPoint]:
    """Snapshots over the last ``hours`` hours, thinned to at most ``max_points``; each point's
    consumption is the rate over the hour before it (the tile's definition), not since the previous point."""
    now = timezone.now()
    since = now - timedelta(hours=hours)
    rows = list(PoolSnapshot.objects.filter(pool=pool, taken_at__gte=since - timedelta(hours=RATE_WINDOW_HOURS))
                .order_by("taken_at").values_list("taken_at", "available", "reserved_total"))
    times = [row[0] for row in rows]
    points = [ChartPoint(at=at, available=available, consumption_per_hour=_trailing_rate(rows, times, i))
              for i, (at, available, _total) in enumerate(rows) if at >= since]
    if len(points) > max_points:
        step = len(points) / max_points
        points = [points[int(i * step)] for i in range(max_points - 1)] + [points[-1]]
    return points


def direct_reservations_since(*, pool: Pool, since: datetime, direct_now: int) -> int:
    """Direct-fallback pairs made since ``since``: ``direct_now`` (the counters) minus the direct pairs
    of the newest snapshot taken at or before ``since`` (0 without one: every direct pair counts). The
    window is thus up to one snapshot interval longer than asked, never shorter."""
    snap = pool_snapshots_latest(pool_ids=[pool.pk], before=since).get(pool.pk)
    return max(direct_now - (snap.reserved_direct if snap else 0), 0)


def refill_recent_outcomes(*, pool: Pool, limit: int) -> list[str]:
    """Outcomes of the newest finished refill attempts, newest first.

    Runs that were not a real attempt (skipped because another held the lock, blocked by
    onboarding, still running) neither count as failures nor break a failure streak."""
    ignored = [RefillOutcome.RUNNING, RefillOutcome.SKIPPED_LOCKED, RefillOutcome.BLOCKED_ONBOARDING]
    return list(RefillRun.objects.filter(pool=pool).exclude(outcome__in=ignored)
                .order_by("-started_at", "-id").values_list("outcome", flat=True)[:limit])


def last_refill_run(*, pool: Pool) -> RefillRun | None:
    return cast(RefillRun | None, RefillRun.objects.filter(pool=pool).order_by("-started_at", "-id").first())


def open_alerts(*, pool: Pool | None = None) -> list[PoolAlert]:
    qs = PoolAlert.objects.filter(resolved_at__isnull=True).select_related("pool", "acknowledged_by")
    if pool is not None:
        qs = qs.filter(pool=pool)
    return list(qs.order_by("-opened_at"))


def pool_health(*, pool: Pool) -> dict[str, Any]:
    """The contract's pool health body (GET /api/v1/pools/{name})."""
    # The trigger-kept counters: exact, and this endpoint never counts the pair table.
    pair = pair_counts(pools=[pool])[pool.pk]
    counts = pair.by_status
    consumption = pool_consumption_rates(pool=pool, windows=(RATE_WINDOW_HOURS,), counts=pair)[RATE_WINDOW_HOURS]
    refill = pool_refill_rate(pool=pool, hours=RATE_WINDOW_HOURS)
    last_run = (RefillRun.objects.filter(pool=pool, finished_at__isnull=False)
                .exclude(outcome=RefillOutcome.RUNNING).order_by("-finished_at").first())
    return {
        "name": pool.name,
        "environment": pool.environment,
        "available": counts[PairStatus.AVAILABLE],
        "reserved": counts[PairStatus.RESERVED],
        "used": counts[PairStatus.USED],
        "retired": counts[PairStatus.RETIRED],
        "target_size": pool.target_size,
        "low_watermark": pool.low_watermark,
        "refill_enabled": pool.refill_enabled,
        "last_refill_at": last_run.finished_at if last_run else None,
        "last_refill_status": last_run.outcome if last_run else None,
        "consumption_per_hour": consumption,
        "estimated_hours_to_empty": hours_to_empty(available=counts[PairStatus.AVAILABLE],
                                                   consumption_per_hour=consumption, refill_per_hour=refill),
    }


def prefetch_calls_measured() -> tuple[int, float] | None:
    """(cards issued, TOME HTTP calls attributable to them) from the pool's own records, or None;
    the onboarding summary's measured row (wired by ``monitoring/signals.py``).

    Cards: confirmed reservations (USED), the dashboard's "cards issued". Calls: the refill runs' TOME
    calls amortised over the pairs they prefetched (a pair handed out bears its share of a batch call),
    plus the direct fallback's live calls, averaged over the pairs handed out and charged per card.
    Charging a whole startup fill of 10,000 pairs to the
    first few cards would overstate the prefetch approach's cost by orders of magnitude."""
    pools = list(Pool.objects.all())
    if not pools:
        return None
    counts = pair_counts(pools=pools)
    runs = {row["pool_id"]: row for row in RefillRun.objects.filter(pool__in=pools).values("pool_id")
            .annotate(calls=Sum("tome_calls"), inserted=Sum("inserted")).order_by()}
    handed, cards, calls = 0, 0, 0.0
    for pool in pools:
        by_source = counts[pool.pk].reservations_by_source
        pool_cards, direct_cards = by_source.get("pool", 0), by_source.get("direct", 0)
        run = runs.get(pool.pk) or {"calls": 0, "inserted": 0}
        if run["inserted"]:
            calls += (run["calls"] or 0) * pool_cards / run["inserted"]
        calls += DIRECT_CALLS_PER_PAIR * direct_cards
        handed += pool_cards + direct_cards
        cards += counts[pool.pk].used
    # Cards as the dashboard counts them (confirmed, USED), each bearing the average cost of a pair
    # handed out (a released or expired reservation cost TOME calls too, but is no card).
    return cards, (calls * cards / handed if handed else 0.0)
