"""The dashboard's charts: the time axis fitted to the data, per-bucket refill and TOME activity,
the series the browser draws with uPlot (``chart_series``: the page carries them with ``json_script``,
monitoring/static/monitoring/dashboard_charts.js draws them), and the server-side SVG of the same
points, shown until the script has drawn (and whenever JavaScript is off). ``nice_max`` is shared with
the load-test report.

The time axis spans the data, not the whole selected range: on a deployment 25 minutes old a
fixed 24 h axis would squeeze everything into its right-most 2 %. The range (24 h / 7 d) is the
most the axis may show.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Sum
from django.db.models.expressions import RawSQL
from django.utils import timezone
from django.utils.html import escape

from monitoring.models import PoolSnapshot
from monitoring.numbers import DIRECT_CALLS_PER_PAIR
from monitoring.selectors import ChartPoint, pool_snapshots_latest
from pool.models import Pool
from refill.models import RefillRun

# ---- time axis ------------------------------------------------------------------------------

# The axis never spans less than this: a handful of points a minute apart still reads as a trend.
MIN_WINDOW = timedelta(minutes=10)
# Tick and bucket widths to choose from (the first that gives few enough of them).
STEPS = ([timedelta(minutes=m) for m in (1, 2, 5, 10, 15, 30)]
         + [timedelta(hours=h) for h in (1, 2, 3, 6, 12)] + [timedelta(days=1)])
MAX_TICKS = 7
MAX_BUCKETS = 48


def _step(span: timedelta, most: int) -> timedelta:
    return next((step for step in STEPS if span / step <= most), STEPS[-1])


@dataclass(frozen=True)
class ChartWindow:
    """The time span the charts show: from the pool's oldest data in the selected range to now."""

    start: datetime
    end: datetime

    @property
    def span(self) -> timedelta:
        return self.end - self.start

    def fraction(self, at: datetime) -> float:
        return max(0.0, min(1.0, (at - self.start) / self.span))

    def _aligned(self, step: timedelta) -> datetime:
        """The first multiple of ``step`` (counted from local midnight) at or after ``start``."""
        local = timezone.localtime(self.start)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight + step * math.ceil((local - midnight) / step)

    def ticks(self) -> list[tuple[datetime, str]]:
        step = _step(self.span, MAX_TICKS)
        if step >= timedelta(days=1):
            fmt = "%a %d"
        elif self.span > timedelta(hours=24):
            fmt = "%a %H:%M"
        else:
            fmt = "%H:%M"
        at, ticks = self._aligned(step), []
        while at <= self.end:
            ticks.append((at, at.strftime(fmt)))
            at += step
        return ticks

    def buckets(self) -> tuple[datetime, timedelta]:
        """Origin and width of the activity buckets (at most MAX_BUCKETS over the window)."""
        width = _step(self.span, MAX_BUCKETS)
        return self._aligned(width) - width, width


def chart_window(*, pool: Pool, points: list[ChartPoint], hours: int, now: datetime) -> ChartWindow:
    range_start = now - timedelta(hours=hours)
    first_run = (RefillRun.objects.filter(pool=pool, started_at__gte=range_start).order_by("started_at")
                 .values_list("started_at", flat=True).first())
    oldest = [t for t in (points[0].at if points else None, first_run) if t is not None]
    start = max(range_start, min(oldest, default=now))
    return ChartWindow(start=min(start, now - MIN_WINDOW), end=now)


@dataclass
class ActivityBucket:
    at: datetime
    width: timedelta
    refilled: int  # pairs inserted by refill runs started in the bucket
    tome_calls: int  # refill runs' TOME calls + the direct fallback's (DIRECT_CALLS_PER_PAIR each)

    def per_hour(self, value: int) -> float:
        return value / (self.width / timedelta(hours=1))


def pool_activity(*, pool: Pool, window: ChartWindow, direct_now: int) -> list[ActivityBucket]:
    """Refill and TOME activity of ``pool`` per bucket over ``window``: refill runs grouped by
    PostgreSQL (``date_bin``); the direct fallback's pairs from the growth of the snapshots' direct
    count (``direct_now``, the counters, is the live end), each growth in the bucket of the snapshot
    that saw it. No query touches the pair table."""
    origin, width = window.buckets()
    stride = f"{int(width.total_seconds())} seconds"
    buckets = {}
    at = origin
    while at <= window.end:
        buckets[at] = ActivityBucket(at=at, width=width, refilled=0, tome_calls=0)
        at += width
    runs = (RefillRun.objects.filter(pool=pool, started_at__gte=origin)
            .annotate(bucket=RawSQL("date_bin(%s::interval, started_at, %s)", (stride, origin)))
            .values("bucket").annotate(inserted=Sum("inserted"), calls=Sum("tome_calls")).order_by())
    for row in runs:
        if (bucket := buckets.get(row["bucket"])) is not None:
            bucket.refilled += row["inserted"] or 0
            bucket.tome_calls += row["calls"] or 0
    before = pool_snapshots_latest(pool_ids=[pool.pk], before=origin).get(pool.pk)
    previous = before.reserved_direct if before else 0
    series = list(PoolSnapshot.objects.filter(pool=pool, taken_at__gt=origin, taken_at__lte=window.end)
                  .order_by("taken_at").values_list("taken_at", "reserved_direct"))
    for at, total in [*series, (window.end, direct_now)]:
        grown, previous = max(total - previous, 0), total
        if grown and (bucket := buckets.get(origin + width * ((at - origin) // width))) is not None:
            bucket.tome_calls += DIRECT_CALLS_PER_PAIR * grown
    return list(buckets.values())


def bucket_x(bucket: ActivityBucket, window: ChartWindow) -> datetime:
    """Where a bucket is plotted: its middle, inside the window (the first bucket may start before the
    window, the last one is still running: the edges)."""
    return max(window.start, min(bucket.at + bucket.width / 2, window.end))


# ---- series for the browser (uPlot) ---------------------------------------------------------


def _epoch(at: datetime) -> float:
    return round(at.timestamp(), 3)


def chart_series(*, points: list[ChartPoint], buckets: list[ActivityBucket], window: ChartWindow,
                 low_watermark: int, target: int, time_zone: str) -> dict[str, Any]:
    """The data both uPlot charts of a pool card draw, from the same points and buckets as the SVG
    (x in Unix seconds; ``None`` is a gap). The stock chart's last point is the live one the tiles show."""
    has_activity = any(b.refilled or b.tome_calls for b in buckets)
    return {
        "tz": time_zone,
        "start": _epoch(window.start), "end": _epoch(window.end),
        "per": _width_label(buckets[0].width) if buckets else "",
        "stock": None if len(points) < 2 else {
            "x": [_epoch(p.at) for p in points],
            "available": [p.available for p in points],
            "consumption": [p.consumption_per_hour for p in points],
            "low_watermark": low_watermark, "target": target,
        },
        "activity": None if not has_activity else {
            "x": [_epoch(bucket_x(b, window)) for b in buckets],
            "refilled": [b.refilled for b in buckets],
            "tome_calls": [b.tome_calls for b in buckets],
        },
    }


# ---- charts ---------------------------------------------------------------------------------

W, H = 640, 220
ACTIVITY_H = 170
PAD_L, PAD_R, PAD_T, PAD_B = 56, 56, 14, 28


def nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _fmt(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1_000:
        return f"{value / 1_000:g}k"
    return f"{value:.3g}"


def _frame(*, window: ChartWindow, height: int, label: str, left_max: float, right_max: float,
           left_color: str, right_color: str, left_title: str, right_title: str) -> list[str]:
    """The SVG opening, plot area, grid, both value axes and the time axis (ticks from the window)."""
    plot_w, plot_h = W - PAD_L - PAD_R, height - PAD_T - PAD_B
    parts = [f'<svg class="tp-chart" viewBox="0 0 {W} {height}" role="img" aria-label="{escape(label)}" '
             f'data-start="{window.start.isoformat()}" data-end="{window.end.isoformat()}">',
             f'<rect x="{PAD_L}" y="{PAD_T}" width="{plot_w}" height="{plot_h}" fill="#fbfcfd" stroke="#e3e6ea"/>']
    for i in range(1, 4):
        frac = i / 4
        y = PAD_T + plot_h * (1 - frac)
        parts.append(f'<line x1="{PAD_L}" x2="{PAD_L + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eceff2"/>')
        parts.append(f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10" fill="{left_color}">'
                     f'{_fmt(left_max * frac)}</text>')
        parts.append(f'<text x="{PAD_L + plot_w + 6}" y="{y + 4:.1f}" font-size="10" fill="{right_color}">'
                     f'{_fmt(right_max * frac)}</text>')
    for at, text in window.ticks():
        x = PAD_L + plot_w * window.fraction(at)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{PAD_T + plot_h}" y2="{PAD_T + plot_h + 4}" stroke="#999"/>')
        parts.append(f'<text class="tp-tick" data-at="{at.isoformat()}" x="{x:.1f}" y="{height - 8}" '
                     f'text-anchor="middle" font-size="10" fill="#666">{text}</text>')
    parts.append(f'<text x="{PAD_L}" y="{PAD_T - 3}" font-size="10" fill="{left_color}">{escape(left_title)}</text>')
    parts.append(f'<text x="{PAD_L + plot_w}" y="{PAD_T - 3}" text-anchor="end" font-size="10" fill="{right_color}">'
                 f'{escape(right_title)}</text>')
    return parts


def _placeholder(*, height: int, text: str) -> str:
    return (f'<svg class="tp-chart" viewBox="0 0 {W} {height}" role="img" aria-label="no data yet">'
            f'<rect x="0" y="0" width="{W}" height="{height}" fill="#f8f9fa" rx="6"/>'
            f'<text x="{W / 2}" y="{height / 2}" text-anchor="middle" fill="#666" font-size="13">'
            f'{escape(text)}</text></svg>')


def chart_svg(*, points: list[ChartPoint], window: ChartWindow, low_watermark: int, target: int) -> str:
    """Available pairs (area, left axis) and consumption per hour (line, right axis) over ``window``."""
    if len(points) < 2:
        return _placeholder(height=H, text="Not enough snapshots yet for this range (one is taken every few minutes).")
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    a_max = nice_max(max([p.available for p in points] + [target]))
    rates = [p.consumption_per_hour for p in points if p.consumption_per_hour is not None]
    r_max = nice_max(max(rates) if rates else 0.0)

    def x(at: datetime) -> float:
        return PAD_L + plot_w * window.fraction(at)

    def ya(v: float) -> float:
        return PAD_T + plot_h * (1 - v / a_max)

    def yr(v: float) -> float:
        return PAD_T + plot_h * (1 - v / r_max)

    parts = _frame(window=window, height=H, label="available pairs and consumption", left_max=a_max,
                   right_max=r_max, left_color="#2b6cb0", right_color="#c05621", left_title="available",
                   right_title="consumption / h")
    last = points[-1]
    parts[0] = parts[0].replace("<svg ", f'<svg data-last-available="{last.available}" '
                                f'data-last-consumption="{last.consumption_per_hour or 0.0}" ', 1)
    if 0 < low_watermark < a_max:
        y = ya(low_watermark)
        parts.append(f'<line x1="{PAD_L}" x2="{PAD_L + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d69e2e" '
                     f'stroke-dasharray="4 3"><title>low watermark {low_watermark}</title></line>')
    area = " ".join(f"{x(p.at):.1f},{ya(p.available):.1f}" for p in points)
    base = PAD_T + plot_h
    parts.append(f'<polygon points="{x(points[0].at):.1f},{base:.1f} {area} {x(points[-1].at):.1f},{base:.1f}" '
                 f'fill="#bee3f8" fill-opacity="0.6" stroke="none"/>')
    parts.append(f'<polyline class="tp-series-available" points="{area}" fill="none" stroke="#2b6cb0" '
                 f'stroke-width="1.6"><title>available pairs</title></polyline>')
    rate_pts = " ".join(f"{x(p.at):.1f},{yr(p.consumption_per_hour):.1f}"
                        for p in points if p.consumption_per_hour is not None)
    if rate_pts:
        parts.append(f'<polyline class="tp-series-consumption" points="{rate_pts}" fill="none" stroke="#c05621" '
                     f'stroke-width="1.6"><title>consumption (pairs/hour)</title></polyline>')
    parts.append("</svg>")
    return "".join(parts)


def _width_label(width: timedelta) -> str:
    minutes = int(width.total_seconds() // 60)
    if minutes % 1440 == 0:
        return "day" if minutes == 1440 else f"{minutes // 1440} days"
    if minutes % 60 == 0:
        return "hour" if minutes == 60 else f"{minutes // 60} h"
    return "minute" if minutes == 1 else f"{minutes} min"


def activity_svg(*, buckets: list[ActivityBucket], window: ChartWindow) -> str:
    """Pairs refilled (bars, left axis) and TOME calls (line, right axis) per bucket; the width is on the axes."""
    if not any(b.refilled or b.tome_calls for b in buckets):
        return _placeholder(height=ACTIVITY_H, text="No refill and no TOME call for this pool in this range.")
    plot_w, plot_h = W - PAD_L - PAD_R, ACTIVITY_H - PAD_T - PAD_B
    # Counts per bucket, not scaled to an hour: a 10,000-pair refill in a one-minute bucket is 10,000
    # here (it was drawn as 600,000/h beside a last-hour tile of 10,000). The bucket width is on the axis.
    refill_max = nice_max(max(b.refilled for b in buckets))
    calls_max = nice_max(max(b.tome_calls for b in buckets))
    per = _width_label(buckets[0].width)

    def x(at: datetime) -> float:
        return PAD_L + plot_w * window.fraction(at)

    base = PAD_T + plot_h
    parts = _frame(window=window, height=ACTIVITY_H, label="refill rate and TOME calls", left_max=refill_max,
                   right_max=calls_max, left_color="#2f855a", right_color="#6b46c1", left_title=f"refilled per {per}",
                   right_title=f"TOME calls per {per}")
    for b in buckets:
        if not b.refilled:
            continue
        x0, x1 = x(b.at), x(b.at + b.width)
        height = plot_h * b.refilled / refill_max
        parts.append(f'<rect class="tp-series-refill" x="{x0:.1f}" y="{base - height:.1f}" '
                     f'width="{max(x1 - x0 - 1, 1.5):.1f}" height="{height:.1f}" fill="#68d391">'
                     f'<title>{b.refilled} pairs refilled from {timezone.localtime(b.at):%H:%M}</title></rect>')
    calls = " ".join(f"{x(bucket_x(b, window)):.1f},{base - plot_h * b.tome_calls / calls_max:.1f}"
                     for b in buckets)
    parts.append(f'<polyline class="tp-series-tome" points="{calls}" fill="none" stroke="#6b46c1" stroke-width="1.6">'
                 f'<title>TOME calls per {per} for this pool (refills + direct fallback)</title></polyline>')
    parts.append("</svg>")
    return "".join(parts)
