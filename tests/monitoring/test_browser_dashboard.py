"""The pool health dashboard in a real browser: log in, follow the link from the admin index, read
the figures and compare them with the database; the charts are drawn by uPlot (a canvas per chart, no
console error, nothing blocked by the CSP) from the series the tiles end at, and the server's SVG is
the fallback a page without JavaScript shows; a screenshot lands in tests/artifacts/."""
from __future__ import annotations

import json
import math
from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.models import PoolAlert, PoolSnapshot
from pool.models import PairStatus, TokenPair
from refill.models import RefillRun, RefillTrigger
from tests.fixtures.browser import admin_login, artifact

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "dashboard-browser-pw"


def _history(pool, *, hours: int, handed_out_an_hour_ago: int) -> None:
    """Snapshots every 15 minutes: demand peaking in the afternoon drains the pool, and a refill tops
    it up to target whenever it falls below the low watermark (the sawtooth ops expect to see). The
    cumulative "handed out" series has the same shape, scaled to end at ``handed_out_an_hour_ago`` one
    hour ago (the pairs really in the table then), so the live counters continue it."""
    now = timezone.now()
    steps = hours * 4
    available, issued, series = pool.target_size, 0, []
    for i in range(steps, 0, -1):
        at = now - timedelta(minutes=15 * i)
        hour = at.hour + at.minute / 60
        per_hour = 60 + 140 * max(0.0, math.sin((hour - 7) / 24 * 2 * math.pi))
        taken = int(per_hour / 4)
        available, issued = available - taken, issued + (taken if i > 4 else 0)
        if available < pool.low_watermark:
            available = pool.target_size
        series.append((at, available, issued))
    scale = handed_out_an_hour_ago / max(issued, 1)
    PoolSnapshot.objects.bulk_create([
        PoolSnapshot(pool=pool, taken_at=at, available=available, reserved=0, used=round(total * scale), retired=0,
                     reserved_total=round(total * scale))
        for at, available, total in series])


def _watch_errors(page) -> list[str]:
    """Script errors and console errors (a CSP violation is one) of ``page``, collected as they happen."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    return errors


def _assert_uplot_charts(page, card, *, charts: tuple[str, ...], errors: list[str]) -> None:
    """uPlot drew a canvas for each of ``charts`` in ``card`` and hid the SVG fallback behind it, and
    nothing went wrong on the page (``errors`` from ``_watch_errors``)."""
    page.wait_for_load_state("load")
    assert not errors, errors
    for chart in charts:
        card.locator(f'[data-testid="{chart}-uplot"] .uplot canvas').first.wait_for()
        assert card.locator(f'[data-testid="{chart}-uplot"] .uplot canvas').count() == 1, chart
        box = card.locator(f'[data-testid="{chart}-uplot"] .uplot canvas').bounding_box()
        assert box and box["width"] > 300 and box["height"] > 100, (chart, box)
        assert not card.locator(f'[data-testid="{chart}-chart"]').is_visible(), chart
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], width  # the page fits its window: no horizontal scroll


def test_dashboard_shows_the_database_figures(transactional_db, live_server, browser_page, django_user_model,
                                              make_pool, pair_states):
    django_user_model.objects.create_superuser("ops", "ops@example.test", PASSWORD)
    pool = make_pool("default", pairs=1600)
    pool.target_size, pool.low_watermark, pool.critical_watermark = 2000, 1500, 300
    pool.save()
    pair_states(pool, used=200, reserved_at=timezone.now() - timedelta(hours=3))
    pair_states(pool, reserved=12, used=90, retired=8, direct=3)
    RefillRun.objects.create(pool=pool, trigger=RefillTrigger.STARTUP, outcome="succeeded", requested=1600,
                             inserted=1600, tome_calls=4, finished_at=timezone.now())
    PoolAlert.objects.create(pool=pool, condition="pool_low", severity="warning", opened_at=timezone.now(),
                             details={"available": 1290, "low_watermark": 1500})
    other = make_pool("production-cards", pairs=400, environment="PRODUCTION", target_size=500,
                            low_watermark=100, critical_watermark=20)
    _history(pool, hours=24 * 7, handed_out_an_hour_ago=200)

    base = live_server.url
    page = admin_login(browser_page(viewport={"width": 1360, "height": 1000}), live_server, "ops", PASSWORD)
    errors = _watch_errors(page)
    page.click("text=Pool health dashboard")
    page.wait_for_url(f"{base}/admin/dashboard/")

    card = page.locator('[data-testid="pool-default"]')

    def shown(testid: str) -> str:
        return card.locator(f'[data-testid="{testid}"]').inner_text().strip()

    def number(testid: str) -> int:
        return int(shown(testid).replace(",", ""))

    counts = {s: TokenPair.objects.filter(pool=pool, status=s).count() for s in PairStatus}
    assert number("available") == counts[PairStatus.AVAILABLE] == 1290
    assert number("reserved") == counts[PairStatus.RESERVED] == 15
    assert number("used") == counts[PairStatus.USED] == 290
    assert number("retired") == counts[PairStatus.RETIRED] == 8
    issued = counts[PairStatus.USED]  # confirmed reservations; live leases and retired pairs are no cards
    assert number("cards-issued") == issued == 290
    # Reservations ever now (the counters) minus the snapshot an hour ago (the 200 of 3 h ago).
    last_hour = TokenPair.objects.filter(pool=pool, reserved_at__gte=timezone.now() - timedelta(hours=1)).count()
    assert number("consumption-1h") == last_hour == 113
    # Net of refills: the 1,600-pair startup refill of the last hour outpaces 113 reservations.
    assert shown("hours-to-empty") == "—"
    assert "refills keep up" in card.locator('[data-testid="hours-to-empty"] + .tp-sub').inner_text()
    assert number("tome-live") == 3 * issued
    assert number("tome-actual") == 4 + 2 * 3
    assert number("direct") == 3
    outcome = card.locator('[data-testid="last-refill-outcome"]')
    assert outcome.get_attribute("data-value") == "succeeded" and outcome.inner_text() == "Succeeded"
    assert number("open-alerts") == PoolAlert.objects.filter(pool=pool, resolved_at__isnull=True).count() == 1
    assert shown("status") == "Needs attention"
    assert card.locator('[data-testid="stock-chart"] svg polyline').count() == 2
    assert card.locator('[data-testid="activity-chart"] svg .tp-series-refill').count() == 1
    # What the reader sees: uPlot's charts from the card's series, the last point of which is the tiles.
    _assert_uplot_charts(page, card, charts=("stock", "activity"), errors=errors)
    series = json.loads(card.locator('script[type="application/json"]').text_content())
    assert series["stock"]["available"][-1] == number("available")
    assert round(series["stock"]["consumption"][-1]) == number("consumption-1h")
    assert sum(series["activity"]["refilled"]) == 1600
    assert not errors, errors
    assert page.locator('[data-testid="pool-production-cards"] [data-testid="available"]').inner_text() == "400"
    assert other.pk

    page.screenshot(path=artifact("monitoring-dashboard.png"), full_page=True)

    page.click('[data-testid="range-7d"]')
    page.wait_for_url(f"{base}/admin/dashboard/?range=7d")
    assert page.locator('[data-testid="range-7d"].on').count() == 1
    assert page.locator('[data-testid="pool-default"] [data-testid="stock-chart"] svg polyline').count() == 2
    _assert_uplot_charts(page, page.locator('[data-testid="pool-default"]'), charts=("stock", "activity"),
                         errors=errors)
    assert not errors, errors

    # Tunables from the card: a bad edit is a message on the field, not a 500, and nothing changes.
    page.goto(f"{base}/admin/dashboard/")
    card.locator("text=Edit tunables").click()
    page.fill("#id_low_watermark", "2500")
    page.click("input[name=_save]")
    page.wait_for_selector(".errorlist")
    assert "must be below the target size (2,000)" in page.inner_text(".field-low_watermark")
    page.screenshot(path=artifact("monitoring-pool-validation.png"), full_page=False)
    pool.refresh_from_db()
    assert pool.low_watermark == 1500



def test_a_fresh_deployments_dashboard_fits_its_charts_to_25_minutes_of_data(
        transactional_db, live_server, browser_page, django_user_model, make_pool, pair_states):
    """What a newcomer sees 25 minutes after `make run`: the startup fill, five snapshots, a few cards.
    The time axis must span those 25 minutes (not a day with the data in its last 2 %), and a project
    lead (staff, no alert permission) must not be offered a link that answers 403."""
    django_user_model.objects.create_superuser("ops", "ops@example.test", PASSWORD)
    lead = django_user_model.objects.create_user("lead", password=PASSWORD, is_staff=True)
    from django.contrib.auth.models import Permission

    # A project lead follows onboarding, and has no business with alerts, pools or refill runs.
    lead.user_permissions.add(
        Permission.objects.get(content_type__app_label="onboarding", codename="view_onboardingtask"))
    pool = make_pool("default", pairs=2000, target_size=2000, low_watermark=400, critical_watermark=50)
    started = timezone.now() - timedelta(minutes=25)
    run = RefillRun.objects.create(pool=pool, trigger=RefillTrigger.STARTUP, outcome="succeeded", requested=2000,
                                   inserted=2000, tome_calls=4, finished_at=started + timedelta(seconds=3))
    RefillRun.objects.filter(pk=run.pk).update(started_at=started)
    pair_states(pool, reserved=2, used=7, retired=1)
    PoolSnapshot.objects.bulk_create([
        PoolSnapshot(pool=pool, taken_at=started + timedelta(minutes=m), available=2000 - 2 * m // 5, reserved=0,
                     used=2 * m // 5, retired=0, reserved_total=2 * m // 5) for m in range(0, 26, 5)
    ])
    PoolAlert.objects.create(pool=pool, condition="pool_low", severity="warning",
                             opened_at=timezone.now() - timedelta(minutes=14))

    base = live_server.url
    # With JavaScript: uPlot draws both charts at a 1400 px window, without an error.
    page = admin_login(browser_page(viewport={"width": 1400, "height": 1000}), live_server, "ops", PASSWORD)
    errors = _watch_errors(page)
    page.goto(f"{base}/admin/dashboard/")
    _assert_uplot_charts(page, page.locator('[data-testid="pool-default"]'), charts=("stock", "activity"),
                         errors=errors)
    page.screenshot(path=artifact("monitoring-dashboard-fresh-uplot.png"), full_page=True)
    assert not errors, errors
    # The startup fill (2,000 pairs, 4 TOME calls) in the first bucket sits inside the plot and its scales.
    series = json.loads(page.locator('[data-testid="pool-default"] script[type="application/json"]').text_content())
    activity = series["activity"]
    assert activity["refilled"][0] == 2000 and activity["tome_calls"][0] == 4
    assert series["start"] <= activity["x"][0] <= series["end"]

    # Without JavaScript the server's SVG is the chart: its axis and geometry as the browser lays it out.
    page = admin_login(browser_page(viewport={"width": 1400, "height": 1000}, java_script_enabled=False),
                       live_server, "ops", PASSWORD)
    page.goto(f"{base}/admin/dashboard/")
    card = page.locator('[data-testid="pool-default"]')
    stock = card.locator('[data-testid="stock-chart"] svg')
    assert card.locator('[data-testid="stock-uplot"] canvas').count() == 0

    # The axis runs from the oldest data point (the startup fill) to now.
    start = timezone.datetime.fromisoformat(stock.get_attribute("data-start"))
    end = timezone.datetime.fromisoformat(stock.get_attribute("data-end"))
    assert abs((start - started).total_seconds()) < 1 and timedelta(minutes=25) <= end - start < timedelta(minutes=26)
    ticks = stock.locator(".tp-tick")
    labels = ticks.all_text_contents()
    tick_times = [timezone.datetime.fromisoformat(t.get_attribute("data-at")) for t in ticks.all()]
    assert 3 <= len(labels) <= 7 and all(start <= t <= end for t in tick_times)
    assert labels == [timezone.localtime(t).strftime("%H:%M") for t in tick_times]
    # The available-pairs line spans the plot from edge to edge, as drawn by the browser.
    plot = stock.locator("rect").first.bounding_box()
    line = stock.locator(".tp-series-available").bounding_box()
    assert line["width"] >= 0.95 * plot["width"], (line, plot)

    # The refill-rate / TOME-calls chart shares the axis and shows the startup fill at its left edge.
    activity = card.locator('[data-testid="activity-chart"] svg')
    assert activity.get_attribute("data-start") == stock.get_attribute("data-start")
    bar = activity.locator(".tp-series-refill").bounding_box()
    assert bar["x"] - plot["x"] < 0.1 * plot["width"]
    assert activity.locator(".tp-series-tome").count() == 1
    assert card.locator('[data-testid="cards-issued"]').inner_text() == "7"  # confirmed only
    assert "opened 14\xa0minutes ago" in card.locator('[data-testid="alert-age"]').inner_text()
    page.screenshot(path=artifact("monitoring-dashboard-fresh.png"), full_page=True)

    # The pool list fits a 1400 px window, refill state included (it used to be cut off).
    page.goto(f"{base}/admin/pool/pool/")
    table = page.locator("#result_list").bounding_box()
    results = page.locator("#changelist .results").bounding_box()
    assert table["x"] + table["width"] <= results["x"] + results["width"] + 1
    assert page.locator("#result_list td.field-refill").first.inner_text() == "every 60 min"

    # A project lead sees the dashboard, and every link on it opens (no 403 behind a link).
    lead_page = admin_login(browser_page(viewport={"width": 1400, "height": 1000}), live_server, "lead", PASSWORD)
    lead_page.goto(f"{base}/admin/dashboard/")
    assert lead_page.locator('[data-testid="open-alerts-link"]').count() == 0
    assert lead_page.locator('[data-testid="onboarding-link"]').count() == 1
    assert lead_page.locator('[data-testid="open-alerts"]').inner_text() == "1"
    hrefs = lead_page.eval_on_selector_all("#content-main a[href]", "els => els.map(e => e.getAttribute('href'))")
    statuses = {href: lead_page.request.get(
                    f"{base}{href}" if href.startswith("/") else f"{base}/admin/dashboard/{href}").status
                for href in hrefs if not href.startswith("#")}
    assert statuses and all(status != 403 for status in statuses.values()), statuses
