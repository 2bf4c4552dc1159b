"""The load-test report's latency-over-time charts drawn by uPlot (vendored under
monitoring/static/vendor/uplot/, MIT; see the README there), inlined so the report stays one
self-contained page that works offline.

One small chart per operation and approach (p50, p95 and p99 per second of the run, the plan's 50 ms
target as a dashed line) on a logarithmic millisecond axis: at the plan's rate (a card every ~2 s)
and at ×100 the percentiles stay apart and readable, where one linear chart of six overlapping series
hid p95/p99 under a single slow second. Hovering shows each second's values, a drag zooms into a span
(double-click resets), a click on a legend entry hides its series. Without JavaScript the page shows
the SVG charts instead (``<noscript>``)."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

UPLOT_DIR = Path(__file__).resolve().parents[1] / "monitoring" / "static" / "vendor" / "uplot"
TARGET_MS = 50.0
CUTS = ("p50", "p95", "p99")
# uPlot dash patterns for the report's p50 / p95 / p99 line styles (solid, dashed, dotted).
DASHES = {"p50": [], "p95": [6, 3], "p99": [2, 2]}
OPERATIONS = {"create": "Create", "detokenize": "Detokenize"}

_INIT = """
(function () {
  var specs = JSON.parse(document.getElementById('latency-chart-data').textContent);
  specs.forEach(function (spec) {
    var el = document.getElementById(spec.id);
    var ms = function (u, v) { return v == null ? '-' : v.toFixed(1) + ' ms'; };
    var series = [{label: 's'}].concat(spec.series.map(function (s) {
      return {label: s.label, stroke: s.color, dash: s.dash, width: 1.6, value: ms};
    }), [{label: spec.target + ' ms target', stroke: '#000', dash: [8, 4], width: 1, value: ms}]);
    var data = [spec.x].concat(spec.series.map(function (s) { return s.values; }),
                               [spec.x.map(function () { return spec.target; })]);
    new uPlot({title: spec.title, width: Math.max(el.clientWidth, 320), height: 240, series: series,
               scales: {x: {time: false}, y: {distr: 3}},
               axes: [{label: 'seconds since the first scheduled card'}, {label: 'ms (log scale)'}]}, data, el);
  });
})();
"""


def _positive(value: float | None) -> float | None:
    """A value a logarithmic axis can show (a 0 ms or missing second is a gap)."""
    return round(value, 3) if value is not None and value > 0 else None


def chart_specs(report: dict[str, Any], colors: dict[str, str]) -> list[dict[str, Any]]:
    specs = []
    for op, op_title in OPERATIONS.items():
        for name, data in report["approaches"].items():
            timeline = data["timeline"]
            if not timeline:
                continue
            specs.append({
                "id": f"latency-{op}-{name}", "title": f"{op_title} latency per second: {name} approach",
                "x": [w["t"] for w in timeline], "target": TARGET_MS,
                "series": [{"label": f"{name} {cut}", "color": colors.get(name, "#555"), "dash": DASHES[cut],
                            "values": [_positive(w[op][cut]) for w in timeline]} for cut in CUTS],
            })
    return specs


def latency_charts_html(report: dict[str, Any], *, colors: dict[str, str], fallback: list[str]) -> str:
    """The interactive charts (library, styles, data and the script that draws them), with ``fallback``
    (SVG charts) shown instead when JavaScript is off; only ``fallback`` when there is no timeline."""
    specs = chart_specs(report, colors)
    noscript = "".join(f"<figure>{chart}</figure>" for chart in fallback)
    if not specs:
        return noscript
    library = (UPLOT_DIR / "uPlot.iife.min.js").read_text()
    styles = (UPLOT_DIR / "uPlot.min.css").read_text()
    # JSON inside a script element: "</" must not end it early.
    data = json.dumps(specs).replace("</", "<\\/")
    panels = "".join(f"<figure class='latency-chart' id='{html.escape(s['id'])}'></figure>" for s in specs)
    return (f"<style>{styles}.latency-chart{{margin:12px 0}}</style>"
            "<p>Latency per second of the run (from each card's scheduled start), one chart per operation and "
            "approach, log scale. Hover for values, drag to zoom (double-click resets), click a legend entry "
            "to hide it. Charts: uPlot 1.6.32 (MIT), inlined.</p>"
            f"{panels}<noscript>{noscript}</noscript>"
            f"<script type='application/json' id='latency-chart-data'>{data}</script>"
            f"<script>{library}</script><script>{_INIT}</script>")
