"""The admin's pool health dashboard: one card per pool, figures plus an inline SVG chart.

Answers, per pool: is it healthy, how fast is it draining, is refill keeping up, and how many
TOME calls the pool saves. No JavaScript and no CDN: the chart is SVG rendered on the server.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import escape

from core.monitoring.metrics import tome_call_totals
from core.monitoring.models import PoolAlert
from core.monitoring.selectors import (
    LIVE_CALLS_PER_CARD,
    ChartPoint,
    PairCounts,
    last_refill_run,
    open_alerts,
    pair_counts,
    pair_counts_exact_mode,
    pool_chart_points,
    pool_consumption_rates,
    pool_refill_rate,
    pool_tome_calls,
)
from core.pool.models import Pool
from core.refill.models import RefillRun

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
    status: str  # ok | warning | critical
    status_label: str

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
    exact_counts: bool
    tome_calls_by_operation: list[tuple[str, str, int, int]] = field(default_factory=list)


def hours_to_empty(*, available: int, consumption_per_hour: float) -> float | None:
    """Hours until AVAILABLE reaches zero at the last hour's pace (None: not draining)."""
    if consumption_per_hour <= 0:
        return None
    return available / consumption_per_hour


def pool_status(*, pool: Pool, counts: PairCounts, alerts: list[PoolAlert]) -> tuple[str, str]:
    if any(a.severity == "critical" for a in alerts) or counts.available < pool.critical_watermark:
        return "critical", "Critical"
    if alerts or counts.available < pool.low_watermark:
        return "warning", "Needs attention"
    return "ok", "Healthy"


def pool_card(*, pool: Pool, counts: PairCounts, range_hours: int) -> PoolCard:
    consumption = pool_consumption_rates(pool=pool, windows=(1, 24), counts=counts)
    consumption_1h = consumption[1]
    alerts = open_alerts(pool=pool)
    status, label = pool_status(pool=pool, counts=counts, alerts=alerts)
    direct = counts.reservations_by_source.get("direct", 0)
    points = pool_chart_points(pool=pool, hours=range_hours)
    return PoolCard(
        pool=pool, counts=counts,
        consumption_1h=consumption_1h,
        consumption_24h=consumption[24],
        refill_rate_1h=pool_refill_rate(pool=pool, hours=1),
        refill_rate_24h=pool_refill_rate(pool=pool, hours=24),
        hours_to_empty=hours_to_empty(available=counts.available, consumption_per_hour=consumption_1h),
        last_run=last_refill_run(pool=pool),
        alerts=alerts,
        tome_calls_actual=pool_tome_calls(pool=pool, direct_pairs=direct),
        tome_calls_live=LIVE_CALLS_PER_CARD * counts.reservations_total,
        chart_svg=chart_svg(points=points, hours=range_hours, low_watermark=pool.low_watermark,
                            target=pool.target_size),
        chart_has_data=len(points) >= 2,
        status=status, status_label=label,
    )


def dashboard_data(*, range_key: str = "24h") -> DashboardData:
    range_key = range_key if range_key in RANGES else "24h"
    pools = list(Pool.objects.order_by("name"))
    counts = pair_counts(pools=pools)
    cards = [pool_card(pool=p, counts=counts[p.pk], range_hours=RANGES[range_key]) for p in pools]
    by_op: dict[tuple[str, str], list[int]] = {}
    for (namespace, operation, outcome), n in tome_call_totals().items():
        entry = by_op.setdefault((namespace, operation), [0, 0])
        entry[0 if outcome == "ok" else 1] += int(n)
    return DashboardData(
        cards=cards, range_key=range_key, generated_at=timezone.now(), exact_counts=pair_counts_exact_mode(),
        tome_calls_by_operation=[(ns, op, ok, err) for (ns, op), (ok, err) in sorted(by_op.items())],
    )


# ---- chart ----------------------------------------------------------------------------------

W, H = 640, 220
PAD_L, PAD_R, PAD_T, PAD_B = 56, 56, 14, 28


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _fmt(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1_000:
        return f"{value / 1_000:g}k"
    return f"{value:g}"


def chart_svg(*, points: list[ChartPoint], hours: int, low_watermark: int, target: int) -> str:
    """Available pairs (area, left axis) and consumption per hour (line, right axis) over time."""
    end = timezone.now()
    start = end - timedelta(hours=hours)
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    if len(points) < 2:
        return (f'<svg class="tp-chart" viewBox="0 0 {W} {H}" role="img" aria-label="no data yet">'
                f'<rect x="0" y="0" width="{W}" height="{H}" fill="#f8f9fa" rx="6"/>'
                f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" fill="#666" font-size="13">'
                f'Not enough snapshots yet for this range (one is taken every few minutes).</text></svg>')

    span = (end - start).total_seconds()

    def x(at: datetime) -> float:
        return PAD_L + plot_w * max(0.0, min(1.0, (at - start).total_seconds() / span))

    a_max = _nice_max(max([p.available for p in points] + [target]))
    rates = [p.consumption_per_hour for p in points if p.consumption_per_hour is not None]
    r_max = _nice_max(max(rates) if rates else 0.0)

    def ya(v: float) -> float:
        return PAD_T + plot_h * (1 - v / a_max)

    def yr(v: float) -> float:
        return PAD_T + plot_h * (1 - v / r_max)

    parts = [f'<svg class="tp-chart" viewBox="0 0 {W} {H}" role="img" '
             f'aria-label="available pairs and consumption, last {hours} hours">',
             f'<rect x="{PAD_L}" y="{PAD_T}" width="{plot_w}" height="{plot_h}" fill="#fbfcfd" stroke="#e3e6ea"/>']
    for i in range(1, 4):  # horizontal grid + left/right tick labels
        frac = i / 4
        y = PAD_T + plot_h * (1 - frac)
        parts.append(f'<line x1="{PAD_L}" x2="{PAD_L + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eceff2"/>')
        parts.append(f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10" fill="#2b6cb0">'
                     f'{_fmt(a_max * frac)}</text>')
        parts.append(f'<text x="{PAD_L + plot_w + 6}" y="{y + 4:.1f}" font-size="10" fill="#c05621">'
                     f'{_fmt(r_max * frac)}</text>')
    ticks = 6 if hours <= 24 else 7
    for i in range(ticks + 1):
        at = start + timedelta(seconds=span * i / ticks)
        label = at.strftime("%H:%M") if hours <= 24 else at.strftime("%a %d")
        parts.append(f'<text x="{x(at):.1f}" y="{H - 8}" text-anchor="middle" font-size="10" fill="#666">'
                     f'{label}</text>')
    if 0 < low_watermark < a_max:
        y = ya(low_watermark)
        parts.append(f'<line x1="{PAD_L}" x2="{PAD_L + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d69e2e" '
                     f'stroke-dasharray="4 3"><title>low watermark {low_watermark}</title></line>')
    area = " ".join(f"{x(p.at):.1f},{ya(p.available):.1f}" for p in points)
    base = PAD_T + plot_h
    parts.append(f'<polygon points="{x(points[0].at):.1f},{base:.1f} {area} {x(points[-1].at):.1f},{base:.1f}" '
                 f'fill="#bee3f8" fill-opacity="0.6" stroke="none"/>')
    parts.append(f'<polyline points="{area}" fill="none" stroke="#2b6cb0" stroke-width="1.6">'
                 f'<title>available pairs</title></polyline>')
    rate_pts = " ".join(f"{x(p.at):.1f},{yr(p.consumption_per_hour):.1f}"
                        for p in points if p.consumption_per_hour is not None)
    if rate_pts:
        parts.append(f'<polyline points="{rate_pts}" fill="none" stroke="#c05621" stroke-width="1.6">'
                     f'<title>consumption (pairs/hour)</title></polyline>')
    parts.append(f'<text x="{PAD_L}" y="{PAD_T - 3}" font-size="10" fill="#2b6cb0">available</text>')
    parts.append(f'<text x="{PAD_L + plot_w}" y="{PAD_T - 3}" text-anchor="end" font-size="10" fill="#c05621">'
                 f'{escape("consumption / h")}</text>')
    parts.append("</svg>")
    return "".join(parts)


# ---- view -----------------------------------------------------------------------------------


@staff_member_required
def dashboard_view(request: HttpRequest) -> HttpResponse:
    data = dashboard_data(range_key=request.GET.get("range", "24h"))
    context = {
        **admin.site.each_context(request),
        "title": "Pool health",
        "data": data,
        "ranges": list(RANGES),
    }
    return TemplateResponse(request, "admin/monitoring/dashboard.html", context)
