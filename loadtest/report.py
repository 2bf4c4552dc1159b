"""The load test's outputs: the stdout table, and one self-contained HTML page (inline SVG, no CDN)."""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loadtest.interactive import latency_charts_html
from loadtest.verdict import verdict_html, verdict_text
from monitoring.charts import nice_max as _nice_max

COLORS = {"pool": "#1f77b4", "library": "#d62728", "buffered": "#2ca02c"}
DASHES = {"p50": "", "p95": "6 3", "p99": "2 2"}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _lat(summary: dict[str, float | None]) -> str:
    return " / ".join(_ms(summary[k]) for k in ("p50", "p95", "p99", "max"))


def text_table(report: dict[str, Any]) -> str:
    config, tome = report["config"], report.get("tome", {})
    lines = [
        verdict_text(report),
        "",
        f"loadtest: {config['cards_per_day']:,} cards/day × speedup {config['speedup']:g} = "
        f"{config['rate_per_second']:.4f} cards/s for {config['duration']:g} s per approach "
        f"(open loop, latency from each card's scheduled start); TOME latency {tome.get('latency_ms')} ms "
        f"(emulator fault injection, was {tome.get('latency_before_run_ms')} ms, restored)",
        "",
        f"{'approach':<9} {'cards':>6} {'errors':>6} {'dups':>4}  {'create ms p50 / p95 / p99 / max':<33} "
        f"{'detokenize ms p50 / p95 / p99 / max':<36} {'TOME calls':>10} {'per card':>9}",
    ]
    for name, data in report["approaches"].items():
        per_card = data["tome_calls_per_card"]
        lines.append(
            f"{name:<9} {data['cards']:>6} {data['errors']:>6} {data['duplicates']:>4}  "
            f"{_lat(data['latency_ms']['create']):<33} {_lat(data['latency_ms']['detokenize']):<36} "
            f"{data['tome_calls']:>10} {'-' if per_card is None else f'{per_card:.4f}':>9}")
    lines += [f"  {name}: " + "; ".join(_approach_extras(data)) for name, data in report["approaches"].items()]
    if report.get("duplicates_across_approaches"):
        lines.append(f"  DUPLICATES ACROSS APPROACHES: {report['duplicates_across_approaches']}")
    for name, data in report.get("find_max", {}).items():
        lines += _find_max_lines(name, data)
    if report.get("comparison"):
        lines += _comparison_lines(report["comparison"])
    return "\n".join(lines)


def _approach_extras(data: dict[str, Any]) -> list[str]:
    extras = []
    if data["errors_by_code"]:
        extras.append("errors " + ", ".join(f"{code} {n}" for code, n in sorted(data["errors_by_code"].items())))
    extras.append("sources " + ", ".join(f"{s} {n}" for s, n in sorted(data["sources"].items())))
    extras.append("TOME " + (", ".join(f"{op} {n}" for op, n in data["tome_calls_by_operation"].items()) or "none"))
    client = data["client"]
    behind = " — THE CLIENT FELL BEHIND: its own delay is inside these latencies" if client["fell_behind"] else ""
    extras.append(f"client start lag p99 {_ms(client['start_lag_ms']['p99'])} ms, peak {client['busy_peak']} "
                  f"of {client['workers']} workers busy{behind}")
    return extras


def _find_max_lines(name: str, data: dict[str, Any]) -> list[str]:
    lines = ["", f"find-max {name} ({data['step_seconds']:g} s per step; {data['criterion']}):"]
    for step in data["steps"]:
        behind = " (client behind)" if step["client_fell_behind"] else ""
        lines.append(f"  {step['rate']:>9.2f}/s  cards {step['cards']:>6}"
                     f"  create p99 {_ms(step['create_ms']['p99']):>7} ms"
                     f"  detokenize p99 {_ms(step['detokenize_ms']['p99']):>7} ms  errors {step['errors']:>4}"
                     f"  {'ok' if step['ok'] else 'broken'}{behind}")
    lines.append(f"  max sustained {data['max_rate']} cards/s; stopped: {data['stopped_because']}")
    return lines


def _comparison_lines(comparison: dict[str, Any]) -> list[str]:
    lines = ["", f"The plan's comparison at {comparison['cards_per_day']:,} cards/day "
                 f"({comparison['plan_rate_per_second']} cards/s):",
             f"{'approach':<9} {'TOME calls/day measured':>24} {'plan':>9}  basis"]
    rows = comparison["tome_calls_per_day"]
    for name, row in rows.items():
        measured = row["measured_tome_calls_per_day"]
        lines.append(f"{name:<9} {'-' if measured is None else f'{measured:,}':>24} "
                     f"{row['plan_tome_calls_per_day']:>9,}  {row.get('basis', row.get('note', ''))}")
    if all(rows.get(n, {}).get("measured_tome_calls_per_day") for n in ("pool", "library")):
        reduction = 1 - rows["pool"]["measured_tome_calls_per_day"] / rows["library"]["measured_tome_calls_per_day"]
        lines.append(f"  reduction pool vs library: measured {reduction:.1%}, plan 50%")
    library = rows.get("library", {})
    if library.get("tome_calls_per_card") is not None and "dashboard_live_calls_per_card" in library:
        lines.append(f"  library measured {library['tome_calls_per_card']:g} TOME calls per card; the admin "
                     f"dashboard's live path counts {library['dashboard_live_calls_per_card']} (monitoring/numbers.py)")
    for name, row in comparison["headroom"].items():
        if row["max_rate"] is None:
            lines.append(f"  headroom {name}: none found ({row['stopped_because']})")
        else:
            lines.append(f"  headroom {name}: {row['max_rate']:g} cards/s ÷ {comparison['plan_rate_per_second']:.2f} "
                         f"= {row['headroom']:g}× the plan's rate ({row['stopped_because']})")
    if not comparison["headroom"]:
        lines.append(f"  headroom: not measured (add --find-max); defined as {comparison['headroom_definition']}")
    return lines


# ---- SVG charts --------------------------------------------------------------------------------

def _ticks(maximum: float, count: int = 5) -> list[float]:
    return [maximum * i / count for i in range(count + 1)]


def _xform(x: float, *, log_percentile: bool) -> float:
    return -math.log10(max(1e-4, 1 - x / 100)) if log_percentile else x


@dataclass
class _Frame:
    """A line chart's plot area and its axes' ranges: data → SVG coordinates."""
    left: int
    top: int
    plot_w: int
    plot_h: int
    x_min: float
    x_max: float
    y_max: float
    y_log: bool
    x_log_percentile: bool
    y_min: float = 1.0

    def sx(self, x: float) -> float:
        return self.left + (x - self.x_min) / (self.x_max - self.x_min) * self.plot_w

    def sy(self, y: float) -> float:
        if self.y_log:
            return self.top + self.plot_h - (math.log10(max(y, self.y_min)) / math.log10(self.y_max)) * self.plot_h
        return self.top + self.plot_h - y / self.y_max * self.plot_h


def _y_axis(f: _Frame) -> list[str]:
    out = []
    y_ticks = [10.0 ** k for k in range(0, round(math.log10(f.y_max)) + 1)] if f.y_log else _ticks(f.y_max)
    for tick in y_ticks:
        y = f.sy(tick)
        out.append(f'<line x1="{f.left}" x2="{f.left + f.plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>'
                   f'<text x="{f.left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:,.0f}</text>' if f.y_log else
                   f'<text x="{f.left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>')
    return out


def _x_axis(f: _Frame) -> list[str]:
    if f.x_log_percentile:
        labels = [(0, "0%"), (90, "90%"), (99, "99%"), (99.9, "99.9%"), (99.99, "99.99%")]
        x_ticks = [(_xform(p, log_percentile=True), text) for p, text in labels
                   if _xform(p, log_percentile=True) <= f.x_max + 1e-9]
    else:
        x_ticks = [(f.x_min + (f.x_max - f.x_min) * i / 5, None) for i in range(6)]
    out = []
    for x, text in x_ticks:
        label = text if text is not None else (f"{x:.0f}" if f.x_max - f.x_min >= 10 else f"{x:.1f}")
        out.append(f'<line x1="{f.sx(x):.1f}" x2="{f.sx(x):.1f}" y1="{f.top}" y2="{f.top + f.plot_h}" stroke="#eee"/>'
                   f'<text x="{f.sx(x):.1f}" y="{f.top + f.plot_h + 14}" text-anchor="middle">{label}</text>')
    return out


def _series_lines(f: _Frame, series: list[dict[str, Any]]) -> list[str]:
    out = []
    for index, s in enumerate(series):
        coords = [(f.sx(_xform(x, log_percentile=f.x_log_percentile)), f.sy(y)) for x, y in s["points"]
                  if y is not None]
        if not coords:
            continue
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        dash = f' stroke-dasharray="{s["dash"]}"' if s.get("dash") else ""
        out.append(f'<polyline fill="none" stroke="{s["color"]}" stroke-width="1.8"{dash} points="{path}"/>')
        if len(coords) <= 40:
            out.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.2" fill="{s["color"]}"/>' for x, y in coords)
        ly = f.top + 8 + index * 16
        legend_x = f.left + f.plot_w
        out.append(f'<line x1="{legend_x + 10}" x2="{legend_x + 34}" y1="{ly}" y2="{ly}" '
                   f'stroke="{s["color"]}" stroke-width="2"{dash}/>'
                   f'<text x="{legend_x + 40}" y="{ly + 4}">{html.escape(s["label"])}</text>')
    return out


def _frame(points: list[tuple[float, float]], *, hline: float | None, x_log_percentile: bool, left: int, top: int,
           plot_w: int, plot_h: int) -> _Frame:
    x_max = max(p[0] for p in points) or 1.0
    x_min = min(p[0] for p in points) if not x_log_percentile else 0.0
    if x_max == x_min:
        x_max = x_min + 1
    highest = max([p[1] for p in points] + ([hline] if hline else []))
    # A collapsed approach (seconds) next to a healthy one (milliseconds): a log axis keeps both readable.
    y_log = highest > 2000
    y_max = 10 ** math.ceil(math.log10(highest)) if y_log else _nice_max(highest * 1.05)
    return _Frame(left=left, top=top, plot_w=plot_w, plot_h=plot_h, x_min=x_min, x_max=x_max, y_max=y_max,
                  y_log=y_log, x_log_percentile=x_log_percentile)


def line_chart(*, title: str, series: list[dict[str, Any]], x_label: str, y_label: str,
               x_log_percentile: bool = False, width: int = 760, height: int = 300,
               hline: float | None = None) -> str:
    """``series``: [{"label", "color", "dash", "points": [(x, y), …]}]. With ``x_log_percentile`` x is a
    percentile plotted on -log10(1 - p/100) (the HDR "percentile spectrum" axis)."""
    left, right, top, bottom = 64, 170, 34, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    points = [(_xform(x, log_percentile=x_log_percentile), y) for s in series for x, y in s["points"]
              if y is not None]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{html.escape(title)}" font-family="sans-serif" font-size="11">',
           f'<text x="{left}" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>']
    if not points:
        out.append(f'<text x="{left}" y="{top + 40}">no data</text></svg>')
        return "".join(out)
    f = _frame(points, hline=hline, x_log_percentile=x_log_percentile, left=left, top=top, plot_w=plot_w,
               plot_h=plot_h)
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#999"/>')
    out += _y_axis(f) + _x_axis(f)
    if hline is not None and hline <= f.y_max:
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{f.sy(hline):.1f}" y2="{f.sy(hline):.1f}" '
                   f'stroke="#000" stroke-dasharray="4 4"/><text x="{left + plot_w - 4}" y="{f.sy(hline) - 4:.1f}" '
                   f'text-anchor="end">{hline:g} ms</text>')
    y_title = html.escape(y_label + (" (log)" if f.y_log else ""))
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">{html.escape(x_label)}</text>'
               f'<text x="14" y="{top + plot_h / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {top + plot_h / 2})">{y_title}</text>')
    out += _series_lines(f, series)
    out.append("</svg>")
    return "".join(out)


def bar_chart(*, title: str, bars: list[tuple[str, float, str]], y_label: str, width: int = 760,
              height: int = 280, value_format: str = "{:,.0f}") -> str:
    left, right, top, bottom = 64, 20, 34, 56
    plot_w, plot_h = width - left - right, height - top - bottom
    y_max = _nice_max(max([b[1] for b in bars] + [1e-9]) * 1.1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{html.escape(title)}" font-family="sans-serif" font-size="11">',
           f'<text x="{left}" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#999"/>']
    for tick in _ticks(y_max):
        y = top + plot_h - tick / y_max * plot_h
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{value_format.format(tick)}</text>')
    slot = plot_w / max(len(bars), 1)
    for index, (label, value, color) in enumerate(bars):
        bar_h = value / y_max * plot_h
        x = left + index * slot + slot * 0.2
        out.append(f'<rect x="{x:.1f}" y="{top + plot_h - bar_h:.1f}" width="{slot * 0.6:.1f}" height="{bar_h:.1f}" '
                   f'fill="{color}"/><text x="{x + slot * 0.3:.1f}" y="{top + plot_h - bar_h - 4:.1f}" '
                   f'text-anchor="middle">{value_format.format(value)}</text>'
                   f'<text x="{x + slot * 0.3:.1f}" y="{top + plot_h + 16}" '
                   f'text-anchor="middle">{html.escape(label)}</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {top + plot_h / 2})">{html.escape(y_label)}</text></svg>')
    return "".join(out)


def results_table_html(report: dict[str, Any]) -> str:
    """The results as an HTML table that fits the page (one row per approach, latencies in ms)."""
    head = ("<tr><th rowspan='2'>approach</th><th rowspan='2'>cards</th><th rowspan='2'>errors</th>"
            "<th colspan='4'>create ms</th><th colspan='4'>detokenize ms</th><th rowspan='2'>TOME calls</th>"
            "<th rowspan='2'>per card</th></tr><tr>" + "<th>p50</th><th>p95</th><th>p99</th><th>max</th>" * 2 + "</tr>")
    rows = []
    for name, data in report["approaches"].items():
        cells = [name, f"{data['cards']:,}", f"{data['errors']:,}"]
        for op in ("create", "detokenize"):
            cells += [_ms(data["latency_ms"][op][cut]) for cut in ("p50", "p95", "p99", "max")]
        per_card = data["tome_calls_per_card"]
        cells += [f"{data['tome_calls']:,}", "-" if per_card is None else f"{per_card:.4f}"]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return (f"<h2>Results</h2><table id='results' style='font-size:13px'><thead>{head}</thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def html_report(report: dict[str, Any], *, command: str | None = None) -> str:
    approaches = report["approaches"]
    timelines: list[str] = []  # the no-JavaScript fallback of the interactive latency charts
    charts: list[str] = []
    for op, title in (("create", "Create latency per second of the run (from each card's scheduled start)"),
                      ("detokenize", "Detokenize latency per second of the run")):
        series = []
        for name, data in approaches.items():
            for cut in ("p50", "p95", "p99"):
                series.append({"label": f"{name} {cut}", "color": COLORS.get(name, "#555"), "dash": DASHES[cut],
                               "points": [(w["t"], w[op][cut]) for w in data["timeline"]]})
        timelines.append(line_chart(title=title, series=series, x_label="seconds since the first scheduled card",
                                    y_label="ms", hline=50.0))
    series = [{"label": f"{name} {op}", "color": COLORS.get(name, "#555"), "dash": "" if op == "create" else "6 3",
               "points": [tuple(p) for p in data["distribution_ms"][op]]}
              for name, data in approaches.items() for op in ("create", "detokenize")]
    charts.append(line_chart(title="Latency distribution (percentile spectrum, whole run)", series=series,
                             x_label="percentile", y_label="ms", x_log_percentile=True, hline=50.0))
    charts.append(bar_chart(title="TOME calls per card (counted by the TOME emulator, refills included)",
                            bars=[(name, data["tome_calls_per_card"] or 0.0, COLORS.get(name, "#555"))
                                  for name, data in approaches.items()],
                            y_label="calls per card", value_format="{:.3f}"))
    comparison = report.get("comparison", {})
    rows = comparison.get("tome_calls_per_day", {})
    if rows:
        bars = []
        for name, row in rows.items():
            bars.append((f"{name} plan", float(row["plan_tome_calls_per_day"]), "#bbbbbb"))
            bars.append((f"{name} measured", float(row["measured_tome_calls_per_day"] or 0), COLORS.get(name, "#555")))
        charts.append(bar_chart(title="TOME calls per day at 50,000 cards/day: the plan vs measured", bars=bars,
                                y_label="TOME calls per day"))
    for name, data in report.get("find_max", {}).items():
        series = [{"label": f"{op} p99", "color": COLORS.get(name, "#555"), "dash": dash,
                   "points": sorted((s["rate"], s[f"{op}_ms"]["p99"]) for s in data["steps"])}
                  for op, dash in (("create", ""), ("detokenize", "6 3"))]
        charts.append(line_chart(title=f"find-max {name}: p99 by offered rate", series=series,
                                 x_label="cards per second", y_label="p99 ms", hline=50.0))
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             "<title>TokenPool load test</title><style>body{font-family:sans-serif;margin:24px;max-width:820px}"
             "table{border-collapse:collapse}td,th{padding:4px 8px;text-align:left;border-bottom:1px solid #ddd}"
             "pre{background:#f4f4f4;padding:10px;overflow-x:auto;font-size:12px}figure{margin:18px 0}</style>"
             "</head><body>",
             "<h1>TokenPool load test: pool vs library</h1>",
             verdict_html(report),
             f"<p>Generated {generated}. Pool approach in blue, library approach in red; solid p50, dashed p95, "
             "dotted p99. The dashed black line is the plan's 50 ms p99 target.</p>"]
    if command:
        parts.append(f"<p>Command: <code>{html.escape(command)}</code></p>")
    parts.append(latency_charts_html(report, colors=COLORS, fallback=timelines))
    parts += [f"<figure>{chart}</figure>" for chart in charts]
    parts.append(results_table_html(report))
    parts.append(f"<h2>Full output</h2><pre>{html.escape(text_table(report))}</pre></body></html>")
    return "\n".join(parts)
