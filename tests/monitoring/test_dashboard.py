"""The admin pool-health dashboard: staff only, and every figure equal to what the database says."""
from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.charts import ChartWindow, chart_svg
from monitoring.models import PoolAlert, PoolSnapshot
from monitoring.numbers import hours_to_empty
from monitoring.selectors import ChartPoint, pool_chart_points
from monitoring.services import pool_snapshots_take
from pool.models import PairSource, PairStatus, TokenPair
from refill.models import RefillRun, RefillTrigger

pytestmark = pytest.mark.django_db


def figures(html: str, pool: str) -> dict[str, str]:
    section = re.search(rf'<section class="tp-card" data-testid="pool-{re.escape(pool)}".*?</section>', html, re.DOTALL)
    assert section, f"no card for {pool}"
    return dict(re.findall(r'data-testid="([a-z0-9-]+)" data-value="([^"]*)"', section.group(0)))


def test_dashboard_is_staff_only(client, django_user_model):
    assert client.get("/admin/dashboard/").status_code == 302
    user = django_user_model.objects.create_user("viewer", password="pw-123456")
    client.force_login(user)
    response = client.get("/admin/dashboard/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_admin_index_links_to_the_dashboard(admin_client):
    html = admin_client.get("/admin/").content.decode()
    assert 'href="/admin/dashboard/"' in html and "Pool health dashboard" in html
    assert 'href="/admin/pool/pool/"' in html  # Django's own app list is still there


def test_dashboard_figures_match_the_database(admin_client, make_pool, pair_states):
    pool = make_pool("dash", pairs=120, target_size=200, low_watermark=150, critical_watermark=20)
    now = timezone.now()
    pool_snapshots_take(now=now - timedelta(hours=25))  # nothing handed out yet
    pair_states(pool, used=10, reserved_at=now - timedelta(hours=2))  # consumed before the last hour
    pool_snapshots_take(now=now - timedelta(minutes=61))  # the snapshot nearest the 1 h window start
    pair_states(pool, reserved=3, used=6, retired=2, direct=4)  # consumed within the last hour
    RefillRun.objects.create(pool=pool, trigger=RefillTrigger.SCHEDULED, outcome="succeeded",
                             finished_at=timezone.now(), requested=120, inserted=120, tome_calls=2)
    RefillRun.objects.create(pool=pool, trigger=RefillTrigger.LOW_WATERMARK, outcome="failed",
                             finished_at=timezone.now(), tome_calls=3, error="TOME unavailable")
    PoolAlert.objects.create(pool=pool, condition="pool_low", severity="warning", opened_at=timezone.now())

    html = admin_client.get("/admin/dashboard/").content.decode()
    got = figures(html, "dash")
    db = {s: TokenPair.objects.filter(pool=pool, status=s).count() for s in PairStatus}
    assert int(got["available"]) == db[PairStatus.AVAILABLE] == 99
    assert int(got["reserved"]) == db[PairStatus.RESERVED] == 7
    assert int(got["used"]) == db[PairStatus.USED] == 16
    assert int(got["retired"]) == db[PairStatus.RETIRED] == 2
    # Cards are confirmed reservations only: the live leases and the released/expired ones are not.
    assert int(got["cards-issued"]) == db[PairStatus.USED] == 16
    # Rates: reservations ever now (the counters) minus the snapshot nearest the window start, per hour
    # of the time actually between them.
    assert float(got["consumption-1h"]) == pytest.approx(15 / (61 / 60), rel=0.01)
    assert float(got["consumption-24h"]) == pytest.approx(25 / 25, rel=0.01)
    assert float(got["refill-1h"]) == 120 and float(got["refill-24h"]) == pytest.approx(5.0)
    # Net of refills: 120 refilled in the last hour against 15 consumed, the pool is not draining.
    assert got["hours-to-empty"] == ""
    assert "refills keep up with consumption" in html
    assert got["last-refill-outcome"] == "failed"
    direct = TokenPair.objects.filter(pool=pool, source=PairSource.DIRECT).count()
    assert int(got["direct"]) == direct == 4
    assert int(got["tome-live"]) == 3 * 16  # live path: NS1 + NS2 create, NS2 detokenize
    assert int(got["tome-actual"]) == 2 + 3 + 2 * direct
    assert int(got["tome-saved"]) == 48 - 13
    assert int(got["open-alerts"]) == 1
    assert got["status"] == "warning"  # below low watermark, above critical
    assert "available below low watermark" in html


def test_a_refill_blocked_by_onboarding_names_the_missing_approvals(admin_client, make_pool):
    pool = make_pool("gated", pairs=0, target_size=200, low_watermark=150, critical_watermark=20)
    RefillRun.objects.create(pool=pool, trigger=RefillTrigger.SCHEDULED, outcome="blocked_onboarding",
                             finished_at=timezone.now(),
                             error="Missing onboarding approvals (UAT): Master key creation - UAT")
    html = admin_client.get("/admin/dashboard/").content.decode()
    notice = re.search(r'data-testid="blocked-onboarding">(.*?)</div>', html, re.DOTALL)
    assert notice and "Master key creation - UAT" in notice.group(1)
    assert "/admin/onboarding/onboardingtask/summary/UAT/" in notice.group(1)


def test_chart_drawn_from_snapshots_for_both_ranges(admin_client, make_pool):
    pool = make_pool("charted", pairs=10)
    now = timezone.now()
    PoolSnapshot.objects.bulk_create([
        PoolSnapshot(pool=pool, taken_at=now - timedelta(hours=h), available=2000 - 50 * h, reserved=0, used=50 * h,
                     retired=0, reserved_total=2000 - 50 * h)
        for h in range(0, 30, 2)
    ])
    for range_key in ("24h", "7d"):
        html = admin_client.get(f"/admin/dashboard/?range={range_key}").content.decode()
        card = re.search(r'data-testid="pool-charted".*?</section>', html, re.DOTALL).group(0)
        assert "<svg" in card and card.count("<polyline") == 2, range_key
        assert f'data-testid="range-{range_key}"' in html
    empty = make_pool("uncharted", pairs=1)
    html = admin_client.get("/admin/dashboard/").content.decode()
    uncharted = re.search(r'data-testid="pool-uncharted".*?</section>', html, re.DOTALL)
    assert "Not enough snapshots yet" in uncharted.group(0)
    assert empty.pk


def test_chart_points_are_inside_the_plot():
    now = timezone.now()
    points = [ChartPoint(at=now - timedelta(hours=24 - h), available=100 * h,
                         consumption_per_hour=None if h == 0 else 30.0)
              for h in range(0, 25, 6)]
    svg = chart_svg(points=points, window=ChartWindow(start=now - timedelta(hours=24), end=now), low_watermark=500,
                    target=2000)
    coords = [tuple(map(float, p.split(","))) for p in re.findall(r"\d+\.\d,\d+\.\d", svg)]
    assert coords and all(0 <= x <= 640 and 0 <= y <= 220 for x, y in coords)
    assert "low watermark 500" in svg


def test_hours_to_empty():
    assert hours_to_empty(available=100, consumption_per_hour=0) is None
    assert hours_to_empty(available=100, consumption_per_hour=40) == 2.5


def test_rates_come_from_snapshot_differences(admin_client, make_pool, pair_states):
    """Nothing scans by reserved_at: consumption is the growth of the cumulative count since the
    snapshot nearest the window start; the counts themselves are exact (the counters)."""
    pool = make_pool("bigpool", pairs=100)
    pair_states(pool, used=30)
    now = timezone.now()
    PoolSnapshot.objects.bulk_create([
        PoolSnapshot(pool=pool, taken_at=now - timedelta(hours=25), available=100, reserved=0, used=0, retired=0,
                     reserved_total=0),
        PoolSnapshot(pool=pool, taken_at=now - timedelta(hours=2), available=80, reserved=0, used=20, retired=0,
                     reserved_total=20),
    ])
    got = figures(admin_client.get("/admin/dashboard/").content.decode(), "bigpool")
    assert int(got["cards-issued"]) == int(got["used"]) == 30 and int(got["available"]) == 70
    assert float(got["consumption-1h"]) == pytest.approx(10 / 2, rel=0.01)  # 10 more than 2 h ago
    assert float(got["consumption-24h"]) == pytest.approx(30 / 25, rel=0.01)


def _card(html: str, pool: str) -> str:
    return re.search(rf'data-testid="pool-{re.escape(pool)}".*?</section>', html, re.DOTALL).group(0)


def _series(html: str, pool: str) -> dict:
    """The card's chart series as the page carries them for uPlot (json_script: data, not script)."""
    found = re.findall(r'<script type="application/json">(.*?)</script>', _card(html, pool), re.DOTALL)
    assert len(found) == 1, found
    return json.loads(found[0])


def test_a_new_deployments_chart_spans_its_data_not_the_whole_day(admin_client, make_pool):
    """25 minutes of snapshots fill the plot: the axis starts at the oldest snapshot, not 24 h ago."""
    pool = make_pool("fresh", pairs=5, target_size=500)
    now = timezone.now()
    PoolSnapshot.objects.bulk_create([
        PoolSnapshot(pool=pool, taken_at=now - timedelta(minutes=m), available=500 - 4 * (25 - m), reserved=0,
                     used=4 * (25 - m), retired=0, reserved_total=4 * (25 - m))
        for m in range(25, -1, -5)
    ])
    svg = re.search(r'data-testid="stock-chart">(<svg.*?</svg>)', _card(admin_client.get("/admin/dashboard/")
                                                                      .content.decode(), "fresh"), re.DOTALL).group(1)
    start = timezone.datetime.fromisoformat(re.search(r'data-start="([^"]+)"', svg).group(1))
    end = timezone.datetime.fromisoformat(re.search(r'data-end="([^"]+)"', svg).group(1))
    assert abs((start - (now - timedelta(minutes=25))).total_seconds()) < 1
    assert timedelta(minutes=25) <= end - start < timedelta(minutes=26)
    ticks = [timezone.datetime.fromisoformat(t) for t in re.findall(r'class="tp-tick" data-at="([^"]+)"', svg)]
    assert 3 <= len(ticks) <= 7 and all(start <= t <= end for t in ticks)
    assert {t.minute % 5 for t in ticks} == {0}  # round 5-minute marks, not a fixed 24 h grid
    xs = [float(p.split(",")[0]) for p in re.search(r'class="tp-series-available" points="([^"]+)"', svg)
          .group(1).split()]
    assert xs[0] == pytest.approx(56, abs=0.2) and xs[-1] == pytest.approx(640 - 56, abs=1.0)  # edge to edge


def test_the_seven_day_range_still_shows_only_the_days_with_data(admin_client, make_pool):
    pool = make_pool("three-days", pairs=1)
    now = timezone.now()
    PoolSnapshot.objects.bulk_create([
        PoolSnapshot(pool=pool, taken_at=now - timedelta(hours=h), available=400, reserved=0, used=0, retired=0,
                     reserved_total=0) for h in (72, 48, 24, 0)
    ])
    svg = _card(admin_client.get("/admin/dashboard/?range=7d").content.decode(), "three-days")
    start = timezone.datetime.fromisoformat(re.search(r'data-start="([^"]+)"', svg).group(1))
    assert abs((start - (now - timedelta(hours=72))).total_seconds()) < 1
    labels = re.findall(r'class="tp-tick" data-at="[^"]+"[^>]*>([^<]+)<', svg)
    assert labels and all(re.fullmatch(r"[A-Z][a-z]{2} \d\d:\d\d", label) for label in labels)  # day + time


def test_activity_chart_plots_refills_and_tome_calls_per_bucket(make_pool, pair_states):
    from monitoring.charts import chart_window, pool_activity

    pool = make_pool("busy", pairs=10)
    now = timezone.now()
    run = RefillRun.objects.create(pool=pool, trigger=RefillTrigger.SCHEDULED, outcome="succeeded",
                                   requested=600, inserted=600, tome_calls=12, finished_at=now)
    RefillRun.objects.filter(pk=run.pk).update(started_at=now - timedelta(minutes=20))
    pair_states(pool, direct=3)  # three live pairs made by the fallback just now: 2 TOME calls each
    window = chart_window(pool=pool, points=[], hours=24, now=now)
    assert abs((window.start - (now - timedelta(minutes=20))).total_seconds()) < 1  # from the refill on
    buckets = pool_activity(pool=pool, window=window, direct_now=3)
    assert sum(b.refilled for b in buckets) == 600 and sum(b.tome_calls for b in buckets) == 12 + 6
    [refill_bucket] = [b for b in buckets if b.refilled]
    assert refill_bucket.at <= now - timedelta(minutes=20) < refill_bucket.at + refill_bucket.width
    assert refill_bucket.per_hour(600) == 600 / (refill_bucket.width / timedelta(hours=1))
    assert [b for b in buckets if b.tome_calls][-1].tome_calls == 6  # the direct pairs' bucket is the newest


def test_dashboard_draws_the_activity_chart(admin_client, make_pool):
    pool = make_pool("refilled-now", pairs=1)
    RefillRun.objects.create(pool=pool, trigger=RefillTrigger.STARTUP, outcome="succeeded", requested=500,
                             inserted=500, tome_calls=10, finished_at=timezone.now())
    card = _card(admin_client.get("/admin/dashboard/").content.decode(), "refilled-now")
    activity = re.search(r'data-testid="activity-chart">(<svg.*?</svg>)', card, re.DOTALL).group(1)
    assert activity.count('class="tp-series-refill"') == 1 and 'class="tp-series-tome"' in activity
    assert "500 pairs refilled" in activity
    quiet = make_pool("quiet", pairs=1)
    assert "No refill and no TOME call" in _card(admin_client.get("/admin/dashboard/").content.decode(), quiet.name)


def test_alert_links_only_for_users_allowed_to_follow_them(client, django_user_model, make_pool):
    pool = make_pool("alerted", pairs=1)
    PoolAlert.objects.create(pool=pool, condition="pool_low", severity="warning",
                             opened_at=timezone.now() - timedelta(minutes=14))
    lead = django_user_model.objects.create_user("project-lead", is_staff=True)
    client.force_login(lead)
    html = client.get("/admin/dashboard/").content.decode()
    assert 'data-testid="open-alerts-link"' not in html and "/admin/monitoring/poolalert/" not in html
    assert re.search(r'data-testid="alert-age">opened 14\xa0minutes ago', html)  # not "since 14 minutes"
    assert client.get("/admin/monitoring/poolalert/").status_code == 403  # what the link used to lead to
    assert "/admin/monitoring/poolalert/" not in client.get("/admin/").content.decode()  # nor on the admin index

    from django.contrib.auth.models import Permission

    lead.user_permissions.add(Permission.objects.get(content_type__app_label="monitoring", codename="view_poolalert"))
    html = client.get("/admin/dashboard/").content.decode()
    assert 'data-testid="open-alerts-link"' in html
    assert "/admin/monitoring/poolalert/?state=open" in client.get("/admin/").content.decode()
    assert client.get("/admin/monitoring/poolalert/").status_code == 200


def test_each_tile_equals_its_charts_last_point(admin_client, make_pool, pair_states):
    """The stock chart ends at the tiles: available pairs and last-hour consumption, not a snapshot ago."""
    pool = make_pool("tiles", pairs=200, target_size=300)
    now = timezone.now()
    # Snapshots every 5 minutes for 2 h, 1 reservation per minute; then 9 more reservations since the last one
    # (124 handed out now, 60 of them an hour ago).
    PoolSnapshot.objects.bulk_create([
        PoolSnapshot(pool=pool, taken_at=now - timedelta(minutes=m), available=200 - (120 - m), reserved=0,
                     used=120 - m, retired=0, reserved_total=120 - m)
        for m in range(120, 0, -5)
    ])
    pair_states(pool, used=124)
    html = admin_client.get("/admin/dashboard/").content.decode()
    got = figures(html, "tiles")
    svg = re.search(r'data-testid="stock-chart">(<svg.*?</svg>)', _card(html, "tiles"), re.DOTALL).group(1)
    last_available = int(re.search(r'data-last-available="([^"]+)"', svg).group(1))
    last_consumption = float(re.search(r'data-last-consumption="([^"]+)"', svg).group(1))
    assert last_available == int(got["available"]) == 76
    assert last_consumption == pytest.approx(float(got["consumption-1h"]))
    assert last_consumption == pytest.approx(64, rel=0.01)
    # The uPlot charts draw the series the page carries as JSON: the same points, ending at the same tiles.
    series = _series(html, "tiles")
    stock = series["stock"]
    assert stock["available"][-1] == int(got["available"]) == 76
    assert stock["consumption"][-1] == pytest.approx(float(got["consumption-1h"]))
    assert stock["x"][-1] == pytest.approx(series["end"], abs=1)  # the live point is now, not a snapshot ago
    points = pool_chart_points(pool=pool, hours=24)
    assert stock["available"][:-1] == [p.available for p in points]  # the snapshots the SVG draws, then the tiles
    polyline = re.search(r'class="tp-series-available" points="([^"]+)"', svg).group(1).split()
    assert len(polyline) == len(stock["x"]) == len(points) + 1
    # The line's points are hourly rates too (the tile's window), not 5-minute rates scaled up:
    # one reservation a minute is 60/h.
    rates = [p.consumption_per_hour for p in pool_chart_points(pool=pool, hours=24)]
    assert rates[0] is None and all(r == pytest.approx(60.0) for r in rates[1:])


def test_metrics_carry_the_dashboards_tiles(admin_client, make_pool, pair_states, scrape):
    """One definition (issue 21): /metrics exposes the tiles' rates, time to empty and TOME calls with
    the values the dashboard shows, computed by the same functions."""
    from tests.fixtures.monitoring import sample_value

    pool = make_pool("metered", pairs=120, target_size=200, low_watermark=150, critical_watermark=20)
    pool_snapshots_take(now=timezone.now() - timedelta(minutes=61))
    pair_states(pool, reserved=3, used=26, retired=2, direct=4)  # consumed within the last hour
    RefillRun.objects.create(pool=pool, trigger=RefillTrigger.SCHEDULED, outcome="succeeded",
                             finished_at=timezone.now(), requested=5, inserted=5, tome_calls=2)
    got = figures(admin_client.get("/admin/dashboard/").content.decode(), "metered")
    text = scrape()

    def metric(name: str) -> float | None:
        return sample_value(text, name, {"pool": "metered"})

    assert float(got["consumption-1h"]) > float(got["refill-1h"]) > 0  # draining: time to empty is shown
    assert metric("tokenpool_pool_consumption_per_hour") == pytest.approx(float(got["consumption-1h"]), rel=0.01)
    assert metric("tokenpool_pool_refill_per_hour") == pytest.approx(float(got["refill-1h"]))
    assert metric("tokenpool_pool_hours_to_empty") == pytest.approx(float(got["hours-to-empty"]), rel=0.01)
    assert metric("tokenpool_tome_calls_live_path") == int(got["tome-live"]) == 3 * 26
    assert metric("tokenpool_tome_calls_made") == int(got["tome-actual"]) == 2 + 2 * 4
