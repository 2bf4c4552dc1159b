"""Bulk insert, pool selectors, and the admin pages of the pool room (cheap on a huge pair table)."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.pool.models import AuditRecord, PairStatus, Pool, TokenPair
from core.monitoring.selectors import pool_health
from core.pool.selectors import pool_get
from core.pool.services import pairs_insert_bulk
from core.errors import PoolNotFound
from tests.fixtures.pool import fake_pairs

pytestmark = pytest.mark.django_db


def test_bulk_insert_adds_available_pool_pairs_and_skips_duplicates(pool_with_pairs):
    pool = pool_with_pairs("bulk")
    pairs = fake_pairs(300)
    assert pairs_insert_bulk(pool=pool, pairs=pairs) == 300
    # the same batch again (a retried TOME batch) and a half-overlapping one
    assert pairs_insert_bulk(pool=pool, pairs=pairs) == 0
    assert pairs_insert_bulk(pool=pool, pairs=pairs[150:] + fake_pairs(50)) == 50
    assert pairs_insert_bulk(pool=pool, pairs=[]) == 0
    rows = TokenPair.objects.filter(pool=pool)
    assert rows.count() == 350
    assert set(rows.values_list("status", "source").distinct()) == {(PairStatus.AVAILABLE, "pool")}
    first = rows.get(internal_token=pairs[0].internal_token)
    assert first.external_ref_id == pairs[0].external_ref_id and first.created_at is not None


def test_bulk_insert_joins_the_callers_transaction(pool_with_pairs):
    from django.db import transaction

    pool = pool_with_pairs("bulk-tx")
    with pytest.raises(RuntimeError), transaction.atomic():
        pairs_insert_bulk(pool=pool, pairs=fake_pairs(10))
        raise RuntimeError("the refill batch failed after the insert")
    assert not TokenPair.objects.filter(pool=pool).exists()


def test_pool_get(pool_with_pairs):
    assert pool_get(name=None).name == "default"
    assert pool_get(name="default").name == "default"
    with pytest.raises(PoolNotFound):
        pool_get(name="missing")


def test_health_counts_every_status_and_consumption_uses_reserved_at(api, pool_with_pairs):
    pool = pool_with_pairs("counted", pairs=10)
    health = pool_health(pool=pool)
    assert [health[k] for k in ("available", "reserved", "used", "retired")] == [10, 0, 0, 0]
    assert health["consumption_per_hour"] == 0.0 and health["estimated_hours_to_empty"] is None
    ids = [api.post("/api/v1/reservations", {"pool": "counted"}).json()["reservation_id"] for _ in range(4)]
    api.post(f"/api/v1/reservations/{ids[0]}/confirm")
    api.post(f"/api/v1/reservations/{ids[1]}/release")
    TokenPair.objects.filter(reservation_id=ids[2]).update(reserved_at=timezone.now() - timedelta(hours=3),
                                                           expires_at=timezone.now() - timedelta(hours=2))
    health = pool_health(pool=pool)
    assert [health[k] for k in ("available", "reserved", "used", "retired")] == [6, 2, 1, 1]
    assert health["consumption_per_hour"] == 3.0  # the pair reserved 3 h ago is outside the last hour
    assert health["estimated_hours_to_empty"] == 2.0


def test_pool_health_reports_the_latest_finished_refill(pool_with_pairs):
    from core.refill.models import RefillRun

    pool = pool_with_pairs("refilled", pairs=5)
    older = RefillRun.objects.create(pool=pool, trigger="manual", outcome="failed",
                                     finished_at=timezone.now() - timedelta(hours=2))
    latest = RefillRun.objects.create(pool=pool, trigger="scheduled", outcome="succeeded",
                                      finished_at=timezone.now() - timedelta(minutes=5))
    RefillRun.objects.create(pool=pool, trigger="scheduled")  # still running: not "last"
    health = pool_health(pool=pool)
    assert health["last_refill_status"] == "succeeded" and health["last_refill_at"] == latest.finished_at
    assert older.finished_at < health["last_refill_at"]


# ---- admin --------------------------------------------------------------------------------------------

@pytest.fixture
def staff(django_user_model) -> Client:
    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw-for-tests-only")
    client = Client()
    client.force_login(user)
    return client


def _no_unbounded_pair_count(queries) -> bool:
    # A changelist must never COUNT(*) the whole pair table; counts are capped subqueries.
    return not any(re.search(r'COUNT\(\*\).*FROM "core_tokenpair"', q["sql"]) and "LIMIT" not in q["sql"]
                   for q in queries)


def test_token_pair_changelist_is_read_only_and_never_counts_the_table(staff, api, default_pool):
    api.post("/api/v1/reservations", {})
    with CaptureQueriesContext(connection) as ctx:
        response = staff.get("/admin/core/tokenpair/")
    assert response.status_code == 200
    assert _no_unbounded_pair_count(ctx.captured_queries)
    with CaptureQueriesContext(connection) as ctx:
        assert staff.get("/admin/core/tokenpair/", {"status__exact": "RESERVED"}).status_code == 200
    assert _no_unbounded_pair_count(ctx.captured_queries)
    pair = TokenPair.objects.first()
    assert staff.get(f"/admin/core/tokenpair/{pair.pk}/change/").status_code == 200
    assert staff.get("/admin/core/tokenpair/add/").status_code == 403
    assert staff.post(f"/admin/core/tokenpair/{pair.pk}/delete/").status_code == 403


def test_token_pair_search_is_exact_and_index_backed(staff, default_pool, api):
    body = api.post("/api/v1/reservations", {}).json()
    for term, expected in ((body["internal_token"], 1), (body["external_ref_id"], 1), (body["reservation_id"], 1),
                           (body["internal_token"][:-1], 0)):
        with CaptureQueriesContext(connection) as ctx:
            response = staff.get("/admin/core/tokenpair/", {"q": term})
        assert response.status_code == 200
        assert len(response.context["cl"].result_list) == expected, term
        assert not any("UPPER(" in q["sql"] or "LIKE" in q["sql"] for q in ctx.captured_queries)


def test_pool_admin_lists_available_and_edits_tunables(staff, default_pool):
    response = staff.get("/admin/core/pool/")
    assert response.status_code == 200 and b"default" in response.content
    assert staff.get(f"/admin/core/pool/{default_pool.pk}/change/").status_code == 200


def test_audit_admin_is_read_only_and_searches_by_token_digest(staff, api, default_pool, tome):
    body = api.post("/api/v1/reservations", {}).json()
    api.post("/api/v1/lookup", {"internal_token": body["internal_token"]})
    response = staff.get("/admin/core/auditrecord/", {"q": body["internal_token"]})
    assert response.status_code == 200 and len(response.context["cl"].result_list) == 1
    record = AuditRecord.objects.get()
    assert staff.get(f"/admin/core/auditrecord/{record.pk}/change/").status_code == 200
    assert staff.get("/admin/core/auditrecord/add/").status_code == 403


def test_api_key_admin_creates_a_scoped_key_and_shows_it_once(staff):
    from core.api.models import ApiKey

    assert staff.get("/admin/core/apikey/").status_code == 200
    response = staff.post("/admin/core/apikey/add/", {"name": "from-admin", "scopes": ["lookup", "pools:read"],
                                                      "rate_limit_per_second": "20"}, follow=True)
    assert response.status_code == 200
    key = ApiKey.objects.get(name="from-admin")
    assert key.scopes == ["lookup", "pools:read"] and key.rate_limit_per_second == 20
    assert any("The API key for from-admin is" in str(m) for m in response.context["messages"])
    assert "rest_framework_api_key/apikey" not in staff.get("/admin/").content.decode()


def test_pool_admin_does_not_delete(staff, default_pool):
    assert staff.post(f"/admin/core/pool/{default_pool.pk}/delete/").status_code == 403
    assert Pool.objects.filter(pk=default_pool.pk).exists()
