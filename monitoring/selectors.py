"""Reads for /metrics, the dashboard and the alert evaluator.

Counting pairs on a pair table that grows to tens of millions of rows (USED pairs are never
deleted) must not scan it on every scrape. What is cheap:
- AVAILABLE and RESERVED counts walk the partial indexes ``pair_available_idx`` and
  ``pair_lease_expiry_idx`` (small: at most the pool's target and its live leases);
- pairs inserted since a ``PoolSnapshot``'s ``anchor_id`` are a primary-key range scan.
So below ``MONITORING_EXACT_COUNT_MAX_ROWS`` (planner estimate) everything is one exact grouped
count; above it, AVAILABLE/RESERVED and the reservation counters stay exact (rows inserted ever,
from the last snapshot plus the tail, minus AVAILABLE) and only the USED/RETIRED split comes from
the last snapshot (``terminal_age_seconds`` says how old). docs/operations.md has the figures.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.db import connection
from django.db.models import Count, Q, Sum
from django.utils import timezone

from monitoring.models import PoolAlert, PoolSnapshot
from monitoring.numbers import DIRECT_CALLS_PER_PAIR, RATE_WINDOW_HOURS, hours_to_empty
from pool.models import PairSource, PairStatus, Pool, TokenPair
from refill.models import RefillOutcome, RefillRun

STATUSES = [s.value for s in PairStatus]
SOURCES = [s.value for s in PairSource]
# A pair id is taken as committed once its row is this old: no insert transaction lives this long
# (refill batches commit in well under a second; idle transactions are cut off after 60 s).
ANCHOR_MARGIN = timedelta(minutes=5)


@dataclass
class PairCounts:
    by_status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    # Pairs ever handed out by source ("pool" | "direct"): every non-AVAILABLE pair was reserved once.
    reservations_by_source: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))
    terminal_age_seconds: float = 0.0  # 0: USED/RETIRED counted now; else age of the snapshot used
    exact: bool = True

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


def table_row_estimate(*, table: str) -> int:
    """The planner's row estimate (``pg_class.reltuples``; -1 = never analysed, read as 0)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [table])
        row = cursor.fetchone()
    return max(int(row[0]), 0) if row and row[0] is not None else 0


def pair_counts_exact_mode() -> bool:
    table = TokenPair._meta.db_table  # noqa: SLF001 - Model._meta is Django's documented Options API
    return bool(table_row_estimate(table=table) <= settings.MONITORING_EXACT_COUNT_MAX_ROWS)


def pair_counts(*, pools: list[Pool]) -> dict[int, PairCounts]:
    """Counts per pool id (every pool of ``pools`` is present)."""
    if pair_counts_exact_mode():
        return _pair_counts_full(pool_ids=[p.pk for p in pools])
    return _pair_counts_incremental(pools=pools)


def _pair_counts_full(*, pool_ids: list[int]) -> dict[int, PairCounts]:
    result = {pk: PairCounts() for pk in pool_ids}
    rows = (TokenPair.objects.filter(pool_id__in=pool_ids).values_list("pool_id", "status", "source")
            .annotate(n=Count("*")).order_by())
    for pool_id, status, source, n in rows:
        counts = result[pool_id]
        counts.by_status[status] += n
        if status != PairStatus.AVAILABLE:
            counts.reservations_by_source[source] += n
    return result


def _pair_counts_incremental(*, pools: list[Pool]) -> dict[int, PairCounts]:
    now = timezone.now()
    pool_ids = [p.pk for p in pools]
    result = {pk: PairCounts(exact=False) for pk in pool_ids}
    # Both filters match a partial index predicate exactly, so neither touches USED/RETIRED rows.
    for status in (PairStatus.AVAILABLE, PairStatus.RESERVED):
        for pool_id, n in (TokenPair.objects.filter(status=status, pool_id__in=pool_ids)
                           .values_list("pool_id").annotate(n=Count("*")).order_by()):
            result[pool_id].by_status[status] = n
    latest = pool_snapshots_latest(pool_ids=pool_ids)
    for pool_id in pool_ids:
        counts, snap = result[pool_id], latest.get(pool_id)
        if snap is None:  # never snapshotted: pay for one exact count of this pool
            result[pool_id] = _pair_counts_full(pool_ids=[pool_id])[pool_id]
            continue
        rows = dict.fromkeys(SOURCES, 0)
        rows[PairSource.POOL] += snap.rows_pool
        rows[PairSource.DIRECT] += snap.rows_direct
        for source, n in (TokenPair.objects.filter(pool_id=pool_id, id__gt=snap.anchor_id)
                          .values_list("source").annotate(n=Count("*")).order_by()):
            rows[source] += n
        counts.reservations_by_source[PairSource.POOL] = max(rows[PairSource.POOL] - counts.available, 0)
        counts.reservations_by_source[PairSource.DIRECT] = rows[PairSource.DIRECT]
        counts.by_status[PairStatus.USED] = snap.used
        counts.by_status[PairStatus.RETIRED] = snap.retired
        counts.terminal_age_seconds = max((now - snap.taken_at).total_seconds(), 0.0)
    return result


def pool_snapshots_latest(*, pool_ids: list[int], before: datetime | None = None) -> dict[int, PoolSnapshot]:
    qs = PoolSnapshot.objects.filter(pool_id__in=pool_ids)
    if before is not None:
        qs = qs.filter(taken_at__lte=before)
    return {s.pool_id: s for s in qs.order_by("pool_id", "-taken_at").distinct("pool_id")}


def pair_anchor_id(*, before: datetime) -> int:
    """The newest pair id created before ``before`` (walks the primary key back from the end)."""
    row = (TokenPair.objects.filter(created_at__lt=before).order_by("-id").values_list("id", flat=True)[:1])
    return row[0] if row else 0


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


def metrics_snapshot() -> MetricsData:
    pools = list(Pool.objects.order_by("name"))
    open_alerts = [
        (pool_name, condition, severity, n)
        for pool_name, condition, severity, n in (
            PoolAlert.objects.filter(resolved_at__isnull=True)
            .values_list("pool__name", "condition", "severity").annotate(n=Count("*")).order_by())
    ]
    return MetricsData(pools=pools, counts=pair_counts(pools=pools), refill_runs=refill_run_counts(),
                       open_alerts=open_alerts)


# ---- dashboard ------------------------------------------------------------------------------


def pool_consumption_rates(*, pool: Pool, windows: tuple[int, ...] = (1, 24),
                           counts: PairCounts | None = None) -> dict[int, float]:
    """Pairs handed out per hour over each window (hours), any source.

    Small table: one exact count by ``reserved_at`` for all windows together. Large table (no index
    on ``reserved_at``, by design of the hot path): cumulative reservations now minus those of the
    snapshot nearest the window start, divided by the time actually between them."""
    now = timezone.now()
    if pair_counts_exact_mode():
        filters = {f"w{h}": Count("id", filter=Q(reserved_at__gte=now - timedelta(hours=h))) for h in windows}
        longest = now - timedelta(hours=max(windows))
        got = TokenPair.objects.filter(pool=pool, reserved_at__gte=longest).aggregate(**filters)
        return {h: got[f"w{h}"] / h for h in windows}
    total_now = (counts or pair_counts(pools=[pool])[pool.pk]).reservations_total
    oldest = PoolSnapshot.objects.filter(pool=pool).order_by("taken_at").first()
    rates: dict[int, float] = {}
    for h in windows:
        snap = pool_snapshots_latest(pool_ids=[pool.pk], before=now - timedelta(hours=h)).get(pool.pk) or oldest
        elapsed_h = (now - snap.taken_at).total_seconds() / 3600 if snap else 0.0
        rates[h] = max(total_now - snap.reserved_total, 0) / elapsed_h if snap and elapsed_h >= 1 / 60 else 0.0
    return rates


def pool_refill_rate(*, pool: Pool, hours: float) -> float:
    """Pairs inserted by refill runs per hour over the last ``hours`` hours."""
    since = timezone.now() - timedelta(hours=hours)
    inserted = RefillRun.objects.filter(pool=pool, started_at__gte=since).aggregate(n=Sum("inserted"))["n"]
    return (inserted or 0) / hours


def pool_tome_calls(*, pool: Pool, direct_pairs: int) -> int:
    """TOME calls made on behalf of this pool: every refill run's calls plus the direct fallback's."""
    refill = RefillRun.objects.filter(pool=pool).aggregate(n=Sum("tome_calls"))["n"] or 0
    return int(refill) + DIRECT_CALLS_PER_PAIR * direct_pairs


@dataclass
class ChartPoint:
    at: datetime
    available: int
    consumption_per_hour: float | None  # pairs/hour since the previous point; None for the first


def _trailing_rate(rows: list[tuple[datetime, int, int]], i: int) -> float | None:
    """Reservations per hour over the ``RATE_WINDOW_HOURS`` before row ``i`` (the tile's window);
    over the time since the oldest row when there is less history than that; None for the oldest row."""
    at, _available, total = rows[i]
    window_start = at - timedelta(hours=RATE_WINDOW_HOURS)
    j = bisect.bisect_right([r[0] for r in rows], window_start) - 1
    base = rows[max(j, 0)]
    elapsed_h = (at - base[0]).total_seconds() / 3600
    return max(total - base[2], 0) / elapsed_h if elapsed_h > 0 else None


def pool_chart_points(*, pool: Pool, hours: int, max_points: int = 288) -> list[ChartPoint]:
    """Snapshots over the last ``hours`` hours, thinned to at most ``max_points``; each point's
    consumption is the rate over the hour before it (the tile's definition), not since the previous point."""
    now = timezone.now()
    since = now - timedelta(hours=hours)
    rows = list(PoolSnapshot.objects.filter(pool=pool, taken_at__gte=since - timedelta(hours=RATE_WINDOW_HOURS))
                .order_by("taken_at").values_list("taken_at", "available", "reserved_total"))
    points = [ChartPoint(at=at, available=available, consumption_per_hour=_trailing_rate(rows, i))
              for i, (at, available, _total) in enumerate(rows) if at >= since]
    if len(points) > max_points:
        step = len(points) / max_points
        points = [points[int(i * step)] for i in range(max_points - 1)] + [points[-1]]
    return points


def direct_reservations_since(*, pool: Pool, since: datetime) -> int:
    """Direct-fallback pairs made since ``since``: they are new rows, so only the id tail is read."""
    anchor_snap = pool_snapshots_latest(pool_ids=[pool.pk], before=since - ANCHOR_MARGIN).get(pool.pk)
    floor = anchor_snap.anchor_id if anchor_snap else 0
    return cast(int, TokenPair.objects.filter(pool=pool, id__gt=floor, source=PairSource.DIRECT,
                                              reserved_at__gte=since).count())


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
    # The monitoring counts: exact on small tables, index + snapshot based on large ones, so this
    # endpoint never scans tens of millions of USED rows per call.
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
