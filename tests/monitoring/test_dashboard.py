"""The admin pool-health dashboard: staff only, and every figure equal to what the database says."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from core.monitoring.dashboard import chart_svg, hours_to_empty
from core.monitoring.models import PoolAlert, PoolSnapshot
from core.monitoring.selectors import ChartPoint
from core.pool.models import PairSource, PairStatus, TokenPair
from core.refill.models import RefillRun, RefillTrigger

pytestmark = pytest.mark.django_db


def figures(html: str, pool: str) -> dict[str, str]:
    section = re.search(rf'<section class="tp-card" data-testid="pool-{re.escape(pool)}".*?</section>', html, re.S)
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
    assert 'href="/admin/core/pool/"' in html  # Django's own app list is still there


def test_dashboard_figures_match_the_database(admin_client, make_pool, pair_states):
    pool = make_pool("dash", pairs=120, target_size=200, low_watermark=150, critical_watermark=20)
    two_hours_ago = timezone.now() - timedelta(hours=2)
    pair_states(pool, used=10, reserved_at=two_hours_ago)  # consumed before the last hour
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
    issued = TokenPair.objects.filter(pool=pool, reserved_at__isnull=False).count()
    assert int(got["cards-issued"]) == issued == 25
    in_last_hour = TokenPair.objects.filter(pool=pool, reserved_at__gte=timezone.now() - timedelta(hours=1)).count()
    assert float(got["consumption-1h"]) == in_last_hour == 15
    assert float(got["consumption-24h"]) == pytest.approx(25 / 24)
    assert float(got["refill-1h"]) == 120 and float(got["refill-24h"]) == pytest.approx(5.0)
    assert float(got["hours-to-empty"]) == pytest.approx(99 / 15)
    assert got["last-refill-outcome"] == "failed"
    direct = TokenPair.objects.filter(pool=pool, source=PairSource.DIRECT).count()
    assert int(got["direct"]) == direct == 4
    assert int(got["tome-live"]) == 4 * 25
    assert int(got["tome-actual"]) == 2 + 3 + 2 * direct
    assert int(got["tome-saved"]) == 100 - 13
    assert int(got["open-alerts"]) == 1
    assert got["status"] == "warning"  # below low watermark, above critical
    assert "available below low watermark" in html


def test_a_refill_blocked_by_onboarding_names_the_missing_approvals(admin_client, make_pool):
    pool = make_pool("gated", pairs=0, target_size=200, low_watermark=150, critical_watermark=20)
    RefillRun.objects.create(pool=pool, trigger=RefillTrigger.SCHEDULED, outcome="blocked_onboarding",
                             finished_at=timezone.now(),
                             error="Missing onboarding approvals (UAT): Master key creation - UAT")
    html = admin_client.get("/admin/dashboard/").content.decode()
    notice = re.search(r'data-testid="blocked-onboarding">(.*?)</div>', html, re.S)
    assert notice and "Master key creation - UAT" in notice.group(1)
    assert "/admin/core/onboardingtask/summary/UAT/" in notice.group(1)


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
        card = re.search(r'data-testid="pool-charted".*?</section>', html, re.S).group(0)
        assert "<svg" in card and card.count("<polyline") == 2, range_key
        assert f'data-testid="range-{range_key}"' in html
    empty = make_pool("uncharted", pairs=1)
    html = admin_client.get("/admin/dashboard/").content.decode()
    assert "Not enough snapshots yet" in re.search(r'data-testid="pool-uncharted".*?</section>', html, re.S).group(0)
    assert empty.pk


def test_chart_points_are_inside_the_plot():
    now = timezone.now()
    points = [ChartPoint(at=now - timedelta(hours=24 - h), available=100 * h, consumption_per_hour=None if h == 0 else 30.0)
              for h in range(0, 25, 6)]
    svg = chart_svg(points=points, hours=24, low_watermark=500, target=2000)
    coords = [tuple(map(float, p.split(","))) for p in re.findall(r"\d+\.\d,\d+\.\d", svg)]
    assert coords and all(0 <= x <= 640 and 0 <= y <= 220 for x, y in coords)
    assert "low watermark 500" in svg


def test_hours_to_empty():
    assert hours_to_empty(available=100, consumption_per_hour=0) is None
    assert hours_to_empty(available=100, consumption_per_hour=40) == 2.5


def test_large_table_mode_rates_come_from_snapshot_differences(admin_client, make_pool, pair_states, settings):
    """Above the exact-count threshold nothing scans by reserved_at: consumption is the growth of
    the cumulative count since the snapshot nearest the window start."""
    pool = make_pool("bigpool", pairs=100)
    pair_states(pool, used=30)
    TokenPair.objects.filter(pool=pool).update(created_at=timezone.now() - timedelta(days=2))
    now = timezone.now()
    PoolSnapshot.objects.bulk_create([
        PoolSnapshot(pool=pool, taken_at=now - timedelta(hours=25), available=100, reserved=0, used=0, retired=0,
                     reserved_total=0, anchor_id=TokenPair.objects.filter(pool=pool).order_by("-id").first().pk,
                     rows_pool=100),
        PoolSnapshot(pool=pool, taken_at=now - timedelta(hours=2), available=80, reserved=0, used=20, retired=0,
                     reserved_total=20),
    ])
    settings.MONITORING_EXACT_COUNT_MAX_ROWS = -1
    got = figures(admin_client.get("/admin/dashboard/").content.decode(), "bigpool")
    assert int(got["cards-issued"]) == 30 and int(got["available"]) == 70
    assert float(got["consumption-1h"]) == pytest.approx(10 / 2, rel=0.01)  # 10 more than 2 h ago
    assert float(got["consumption-24h"]) == pytest.approx(30 / 25, rel=0.01)
    assert int(got["used"]) == 20  # USED comes from the newest snapshot in this mode
