"""The load-test report as a reader sees it (issue 21 item 4; contract section 6): Chromium opens the
page ``loadtest --report`` wrote and finds the verdict first, on screen without scrolling, and the
results table whole inside its box at a 1400 px window (it used to be 1,711 px wide, cut off
inside an 820 px box)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.browser import artifact
from tests.loadtest.test_loadtest_smoke import run_loadtest, served  # noqa: F401 - the fixture, shared

pytestmark = pytest.mark.slow


def test_the_report_opens_with_its_verdict_and_its_table_fits(served: dict[str, Any],  # noqa: F811
                                                              tmp_path: Path, browser_page: Any) -> None:
    report = tmp_path / "loadtest.html"
    run_loadtest(served, approach="both", seconds=2, stdout=io.StringIO(), extra=("--report", str(report)))

    page = browser_page(viewport={"width": 1400, "height": 900})
    page.goto(report.as_uri())
    verdict = page.locator("#verdict")
    box = verdict.bounding_box()
    assert box is not None and box["y"] < 900  # on the first screen, before any chart
    text = verdict.inner_text()
    assert ("PASS" in text or "FAIL" in text) and "p99" in text and "TOME" in text
    assert page.evaluate("document.documentElement.scrollWidth") <= 1400
    tables = page.locator("table")
    assert tables.count() >= 1
    for i in range(tables.count()):
        fits = tables.nth(i).evaluate(
            "t => { const box = t.parentElement; return t.getBoundingClientRect().right"
            " <= box.getBoundingClientRect().right + 1 && box.scrollWidth <= box.clientWidth + 1; }")
        assert fits, f"table {i} is wider than its box"
    # The numbers a reader compares: both approaches' rows with their TOME calls per card.
    body = page.locator("body").inner_text()
    assert "pool" in body and "library" in body
    page.screenshot(path=artifact("loadtest-report.png"), full_page=True)


def test_the_latency_charts_are_drawn_by_the_vendored_library_offline(tmp_path: Path, browser_page: Any) -> None:
    """uPlot, inlined: one chart per operation and approach, drawn from the page alone (no request leaves it),
    every second's p50/p95/p99 in the legend; the SVG charts stay in <noscript> for readers without JS."""
    from loadtest.report import html_report
    from tests.loadtest.test_verdict import _report

    report = _report(pool_p99=12.0, pool_per_card=0.004, library_per_card=3.0)
    for name, scale in (("pool", 1.0), ("library", 6.0)):
        report["approaches"][name]["timeline"] = [
            {"t": t, **{op: {"p50": 2.0 * scale, "p95": 4.0 * scale, "p99": (90.0 if t == 7 else 8.0) * scale}
                        for op in ("create", "detokenize")}} for t in range(30)]
    path = tmp_path / "report.html"
    path.write_text(html_report(report))
    page = browser_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda request: requests.append(request.url))
    page.goto(path.as_uri())
    page.wait_for_selector("#latency-create-pool .uplot canvas")
    assert not errors
    assert requests == [path.as_uri()]  # self-contained: nothing fetched
    assert page.locator("figure.latency-chart .uplot").count() == 4  # create/detokenize × pool/library
    legend = page.locator("#latency-detokenize-library .u-legend").inner_text()
    assert "library p50" in legend and "library p99" in legend and "50 ms target" in legend
    assert page.evaluate("document.documentElement.scrollWidth") <= 1400
    assert "<noscript><figure><svg" in path.read_text()
    page.screenshot(path=artifact("loadtest-report-charts.png"), full_page=True)
