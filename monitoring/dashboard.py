"""The admin's pool health dashboard: one card per pool, figures plus two charts.

Answers, per pool: is it healthy, how fast is it draining, is refill keeping up, and how many
TOME calls the pool saves. The charts are drawn in the browser by uPlot (vendored, served from this
site: no CDN) from series the page carries as JSON; the server's SVG of the same points stays on the
page as the fallback (no JavaScript, or the script failed). Time axis, series and SVG: ``charts.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from monitoring.charts import activity_svg, chart_series, chart_svg, chart_window, pool_activity
from monitoring.metrics import tome_call_totals
from monitoring.models import PoolAlert
from monitoring.numbers import LIVE_CALLS_BASIS, LIVE_CALLS_PER_CARD
from monitoring.selectors import (
    ChartPoint,
    PairCounts,
    last_refill_run,
    open_alerts,
    pair_counts,
    pool_chart_points,
    pool_consumption_rates,
    pool_refill_rate,
    pools_numbers,
)
from pool.models import Pool
from refill.models import RefillRun

RANGES = {"24h": 24, "7d": 24 * 7}


@dataclass
class PoolCard:
    pool: Pool
    counts: PairCounts
    consumption_1h: float
    consumption_24h: float
    refill_rate_1h: float
    refill_rate_24h: float
    hours_to_empty: float | None
    last_run: RefillRun | None
    alerts: list[PoolAlert]
    tome_calls_actual: int
    tome_calls_live: int
    chart_svg: str
    chart_has_data: bool
    activity_svg: str
    activity_has_data: bool
    series: dict[str, Any]  # what the uPlot charts draw: the same points and buckets as the SVG
    status: str  # ok | warning | critical
    status_label: str

    @property
    def cards_issued(self) -> int:
        # Confirmed cards only: a reservation released or left to expire never became a card.
        return self.counts.used

    @property
    def tome_calls_saved(self) -> int:
        return max(self.tome_calls_live - self.tome_calls_actual, 0)

    @property
    def savings_percent(self) -> float | None:
        if not self.tome_calls_live:
            return None
        return 100.0 * self.tome_calls_saved / self.tome_calls_live

    @property
    def fill_percent(self) -> float:
        return min(100.0, 100.0 * self.counts.available / self.pool.target_size) if self.pool.target_size else 0.0


@dataclass
class DashboardData:
    cards: list[PoolCard]
    range_key: str
    generated_at: datetime
    tome_calls_by_operation: list[tuple[str, str, int, int]] = field(default_factory=list)


def pool_status(*, pool: Pool, counts: PairCounts, alerts: list[PoolAlert]) -> tuple[str, str]:
    if any(a.severity == "critical" for a in alerts) or counts.available < pool.critical_watermark:
        return "critical", "Critical"
    if alerts or counts.available < pool.low_watermark:
        return "warning", "Needs attention"
    return "ok", "Healthy"


def pool_card(*, pool: Pool, counts: PairCounts, range_hours: int, now: datetime | None = None) -> PoolCard:
    now = now or timezone.now()
    # The last hour's figures as /metrics reads them (one definition); the 24 h ones are the dashboard's own.
    numbers = pools_numbers(pool_ids=[pool.pk], counts={pool.pk: counts})[pool.pk]
    consumption_1h = numbers.consumption_per_hour
    alerts = open_alerts(pool=pool)
    status, label = pool_status(pool=pool, counts=counts, alerts=alerts)
    direct = counts.reservations_by_source.get("direct", 0)
    # The charts end at the tiles: a live point now (the tile's available count and last-hour consumption),
    # so no chart lags its tile by a snapshot interval.
    points = pool_chart_points(pool=pool, hours=range_hours)
    if points:
        points.append(ChartPoint(at=now, available=counts.available, consumption_per_hour=consumption_1h))
    window = chart_window(pool=pool, points=points, hours=range_hours, now=now)
    activity = pool_activity(pool=pool, window=window, direct_now=direct)
    return PoolCard(
        pool=pool, counts=counts,
        consumption_1h=consumption_1h,
        consumption_24h=pool_consumption_rates(pool=pool, windows=(24,), counts=counts)[24],
        refill_rate_1h=numbers.refill_per_hour,
        refill_rate_24h=pool_refill_rate(pool=pool, hours=24),
        hours_to_empty=numbers.hours_to_empty,
        last_run=last_refill_run(pool=pool),
        alerts=alerts,
        tome_calls_actual=numbers.tome_calls_actual,
        tome_calls_live=numbers.tome_calls_live,
        chart_svg=chart_svg(points=points, window=window, low_watermark=pool.low_watermark,
                            target=pool.target_size),
        chart_has_data=len(points) >= 2,
        activity_svg=activity_svg(buckets=activity, window=window),
        activity_has_data=any(b.refilled or b.tome_calls for b in activity),
        series=chart_series(points=points, buckets=activity, window=window, low_watermark=pool.low_watermark,
                            target=pool.target_size, time_zone=timezone.get_current_timezone_name()),
        status=status, status_label=label,
    )


def dashboard_data(*, range_key: str = "24h") -> DashboardData:
    range_key = range_key if range_key in RANGES else "24h"
    pools = list(Pool.objects.order_by("name"))
    counts = pair_counts(pools=pools)
    now = timezone.now()
    cards = [pool_card(pool=p, counts=counts[p.pk], range_hours=RANGES[range_key], now=now) for p in pools]
    by_op: dict[tuple[str, str], list[int]] = {}
    for (namespace, operation, outcome), n in tome_call_totals().items():
        entry = by_op.setdefault((namespace, operation), [0, 0])
        entry[0 if outcome == "ok" else 1] += int(n)
    return DashboardData(
        cards=cards, range_key=range_key, generated_at=now,
        tome_calls_by_operation=[(ns, op, ok, err) for (ns, op), (ok, err) in sorted(by_op.items())],
    )


# ---- view -----------------------------------------------------------------------------------


@staff_member_required
def dashboard_view(request: HttpRequest) -> HttpResponse:
    data = dashboard_data(range_key=request.GET.get("range", "24h"))
    context = {
        **admin.site.each_context(request),
        "title": "Pool health",
        "data": data,
        "ranges": list(RANGES),
        "live_calls_per_card": LIVE_CALLS_PER_CARD,
        "live_calls_basis": LIVE_CALLS_BASIS,
    }
    return TemplateResponse(request, "admin/monitoring/dashboard.html", context)
