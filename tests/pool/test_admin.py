"""The admin pages of the pool room (pairs, pools, audit records, API keys): read-only where the data is
evidence, and cheap on a huge pair table."""
from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from pool.models import AuditRecord, Pool, TokenPair

pytestmark = pytest.mark.django_db


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
        response = staff.get("/admin/pool/tokenpair/")
    assert response.status_code == 200
    assert _no_unbounded_pair_count(ctx.captured_queries)
    with CaptureQueriesContext(connection) as ctx:
        assert staff.get("/admin/pool/tokenpair/", {"status__exact": "RESERVED"}).status_code == 200
    assert _no_unbounded_pair_count(ctx.captured_queries)
    pair = TokenPair.objects.first()
    assert staff.get(f"/admin/pool/tokenpair/{pair.pk}/change/").status_code == 200
    assert staff.get("/admin/pool/tokenpair/add/").status_code == 403
    assert staff.post(f"/admin/pool/tokenpair/{pair.pk}/delete/").status_code == 403


def test_token_pair_search_is_exact_and_index_backed(staff, default_pool, api):
    body = api.post("/api/v1/reservations", {}).json()
    for term, expected in ((body["internal_token"], 1), (body["external_ref_id"], 1), (body["reservation_id"], 1),
                           (body["internal_token"][:-1], 0)):
        with CaptureQueriesContext(connection) as ctx:
            response = staff.get("/admin/pool/tokenpair/", {"q": term})
        assert response.status_code == 200
        assert len(response.context["cl"].result_list) == expected, term
        assert not any("UPPER(" in q["sql"] or "LIKE" in q["sql"] for q in ctx.captured_queries)


def test_pool_admin_lists_available_and_edits_tunables(staff, default_pool):
    response = staff.get("/admin/pool/pool/")
    assert response.status_code == 200 and b"default" in response.content
    row = response.content.decode()
    assert "every 60 min" in row and "2000 / 500" in row and "15 min" in row  # refill, watermarks, lease
    Pool.objects.filter(pk=default_pool.pk).update(refill_enabled=False)
    assert '<td class="field-refill">off</td>' in staff.get("/admin/pool/pool/").content.decode()
    assert staff.get(f"/admin/pool/pool/{default_pool.pk}/change/").status_code == 200


def test_audit_admin_is_read_only_and_searches_by_token_digest(staff, api, default_pool, tome):
    body = api.post("/api/v1/reservations", {}).json()
    api.post("/api/v1/lookup", {"internal_token": body["internal_token"]})
    response = staff.get("/admin/pool/auditrecord/", {"q": body["internal_token"]})
    assert response.status_code == 200 and len(response.context["cl"].result_list) == 1
    record = AuditRecord.objects.get()
    assert staff.get(f"/admin/pool/auditrecord/{record.pk}/change/").status_code == 200
    assert staff.get("/admin/pool/auditrecord/add/").status_code == 403


def test_api_key_admin_creates_a_scoped_key_and_shows_it_once(staff):
    from keys.models import ApiKey

    assert staff.get("/admin/keys/apikey/").status_code == 200
    response = staff.post("/admin/keys/apikey/add/", {"name": "from-admin", "scopes": ["lookup", "pools:read"],
                                                      "rate_limit_per_second": "20"}, follow=True)
    assert response.status_code == 200
    key = ApiKey.objects.get(name="from-admin")
    assert key.scopes == ["lookup", "pools:read"] and key.rate_limit_per_second == 20
    assert any("The API key for from-admin is" in str(m) for m in response.context["messages"])
    assert "rest_framework_api_key/apikey" not in staff.get("/admin/").content.decode()


def test_pool_admin_does_not_delete(staff, default_pool):
    assert staff.post(f"/admin/pool/pool/{default_pool.pk}/delete/").status_code == 403
    assert Pool.objects.filter(pk=default_pool.pk).exists()
