"""Pool health: the counts, consumption and last refill behind GET /api/v1/pools/{name} (contract section 2)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.selectors import pool_health
from monitoring.services import pool_snapshots_take

pytestmark = pytest.mark.django_db


def test_health_counts_every_status_and_consumption_is_the_growth_over_the_last_hour(api, make_pool):
    pool = make_pool("counted", pairs=10)
    health = pool_health(pool=pool)
    assert [health[k] for k in ("available", "reserved", "used", "retired")] == [10, 0, 0, 0]
    assert health["consumption_per_hour"] == 0.0 and health["estimated_hours_to_empty"] is None
    api.post("/api/v1/reservations", {"pool": "counted"})
    pool_snapshots_take(now=timezone.now() - timedelta(hours=1))  # 1 reservation as of an hour ago
    ids = [api.post("/api/v1/reservations", {"pool": "counted"}).json()["reservation_id"] for _ in range(3)]
    api.post(f"/api/v1/reservations/{ids[0]}/confirm")
    api.post(f"/api/v1/reservations/{ids[1]}/release")
    health = pool_health(pool=pool)
    assert [health[k] for k in ("available", "reserved", "used", "retired")] == [6, 2, 1, 1]
    assert health["consumption_per_hour"] == pytest.approx(3.0, rel=0.01)  # 4 ever, 1 of them before the hour
    assert health["estimated_hours_to_empty"] == pytest.approx(2.0, rel=0.01)


def test_pool_health_reports_the_latest_finished_refill(make_pool):
    from refill.models import RefillRun

    pool = make_pool("refilled", pairs=5)
    older = RefillRun.objects.create(pool=pool, trigger="manual", outcome="failed",
                                     finished_at=timezone.now() - timedelta(hours=2))
    latest = RefillRun.objects.create(pool=pool, trigger="scheduled", outcome="succeeded",
                                      finished_at=timezone.now() - timedelta(minutes=5))
    RefillRun.objects.create(pool=pool, trigger="scheduled")  # still running: not "last"
    health = pool_health(pool=pool)
    assert health["last_refill_status"] == "succeeded" and health["last_refill_at"] == latest.finished_at
    assert older.finished_at < health["last_refill_at"]


def test_pool_health_body(api, default_pool):
    pool_snapshots_take(now=timezone.now() - timedelta(hours=1))
    for _ in range(3):
        api.post("/api/v1/reservations", {})
    rid = api.post("/api/v1/reservations", {}).json()["reservation_id"]
    api.post(f"/api/v1/reservations/{rid}/confirm")
    response = api.get("/api/v1/pools/default")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"name", "environment", "available", "reserved", "used", "retired", "target_size",
                         "low_watermark", "refill_enabled", "last_refill_at", "last_refill_status",
                         "consumption_per_hour", "estimated_hours_to_empty"}
    assert (body["available"], body["reserved"], body["used"], body["retired"]) == (46, 3, 1, 0)
    assert body["name"] == "default" and body["environment"] == "UAT"
    assert body["consumption_per_hour"] == pytest.approx(4.0, rel=0.01)
    assert body["estimated_hours_to_empty"] == pytest.approx(46 / 4.0, rel=0.01)


def test_unknown_pool_health_is_404(api):
    response = api.get("/api/v1/pools/no-such-pool")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
