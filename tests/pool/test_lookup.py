"""Lookup (internal → external) and detokenize (external → internal): database first, TOME on a miss,
an append-only audit record for every item."""
from __future__ import annotations

import hashlib

import pytest
from django.db import DatabaseError, connection, transaction

from pool.models import AppendOnlyError, AuditRecord, PairStatus, TokenPair

pytestmark = pytest.mark.django_db


def digest(token: str) -> str:
    from pool.services import audit_token_digest

    digest = audit_token_digest(token)
    assert digest != hashlib.sha256(token.encode()).hexdigest()  # keyed: not reversible from the table alone
    return digest


@pytest.fixture
def issued(api, default_pool):
    """One RESERVED, one USED and one RETIRED pair of the default pool (bodies of the reservations)."""
    reserved = api.post("/api/v1/reservations", {}).json()
    used = api.post("/api/v1/reservations", {}).json()
    api.post(f"/api/v1/reservations/{used['reservation_id']}/confirm")
    retired = api.post("/api/v1/reservations", {}).json()
    api.post(f"/api/v1/reservations/{retired['reservation_id']}/release")
    return {"RESERVED": reserved, "USED": used, "RETIRED": retired}


@pytest.fixture
def tome_only_pair(tome):
    """A pair TOME knows but the database does not (issued before the pool existed)."""
    from tome.provider import get_tome_client

    return get_tome_client().generate_pairs(1)[0]


@pytest.mark.parametrize("status", ["RESERVED", "USED", "RETIRED"])
def test_lookup_and_detokenize_answer_issued_pairs_from_the_database(api, issued, tome, status):
    pair = issued[status]
    expected = {"internal_token": pair["internal_token"], "external_ref_id": pair["external_ref_id"],
                "status": status, "source": "pool"}
    lookup = api.post("/api/v1/lookup", {"internal_token": pair["internal_token"]})
    detok = api.post("/api/v1/detokenize", {"external_ref_id": pair["external_ref_id"]})
    assert (lookup.status_code, lookup.json()) == (200, expected)
    assert (detok.status_code, detok.json()) == (200, expected)
    assert tome.calls("ns2", "lookup") + tome.calls("ns2", "detokenize") == 0  # never asked TOME


def test_available_pairs_are_404_and_never_sent_to_tome(api, default_pool, tome):
    pair = TokenPair.objects.filter(pool=default_pool, status=PairStatus.AVAILABLE).first()
    response = api.post("/api/v1/lookup", {"internal_token": pair.internal_token})
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert api.post("/api/v1/detokenize", {"external_ref_id": pair.external_ref_id}).status_code == 404
    assert tome.stats().get("ns2", {}) == {}


def test_unknown_tokens_are_404_after_one_tome_call(api, default_pool, tome):
    response = api.post("/api/v1/lookup", {"internal_token": "0000000000000000"})
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert api.post("/api/v1/detokenize", {"external_ref_id": "ext_unknown"}).status_code == 404
    assert tome.calls("ns2", "lookup") == 1 and tome.calls("ns2", "detokenize") == 1


def test_a_miss_is_resolved_by_tome(api, default_pool, tome, tome_only_pair):
    tome.reset_stats()
    lookup = api.post("/api/v1/lookup", {"internal_token": tome_only_pair.internal_token},
                      HTTP_X_CORRELATION_ID="lookup-miss-1")
    assert lookup.status_code == 200
    assert lookup.json() == {"internal_token": tome_only_pair.internal_token,
                             "external_ref_id": tome_only_pair.external_ref_id, "status": "USED", "source": "tome"}
    detok = api.post("/api/v1/detokenize", {"external_ref_id": tome_only_pair.external_ref_id})
    assert detok.status_code == 200 and detok.json()["source"] == "tome"
    assert detok.json()["internal_token"] == tome_only_pair.internal_token
    assert tome.calls("ns2", "lookup") == 1 and tome.calls("ns2", "detokenize") == 1
    # the TOME call carried the request's correlation id
    assert any(r["correlation_id"] == "lookup-miss-1" for r in tome.requests(limit=10))
    assert not TokenPair.objects.filter(internal_token=tome_only_pair.internal_token).exists()


def test_tome_down_on_a_miss_is_503_upstream_unavailable(api, default_pool, tome):
    tome.set_faults(outage=True)
    response = api.post("/api/v1/lookup", {"internal_token": "1111222233334444"})
    assert response.status_code == 503 and response.json()["code"] == "upstream_unavailable"
    assert int(response["Retry-After"]) >= 1
    batch = api.post("/api/v1/detokenize/batch", {"external_ref_ids": ["ext_nope"]})
    assert batch.status_code == 503 and batch.json()["code"] == "upstream_unavailable"
    assert AuditRecord.objects.filter(outcome="upstream_unavailable").count() == 2


def test_known_pairs_are_served_while_tome_is_down(api, issued, tome):
    tome.set_faults(outage=True)
    pair = issued["USED"]
    assert api.post("/api/v1/lookup", {"internal_token": pair["internal_token"]}).status_code == 200
    assert api.post("/api/v1/detokenize/batch", {"external_ref_ids": [pair["external_ref_id"]]}).status_code == 200
    assert api.post("/api/v1/reservations", {}).status_code == 201


def test_batch_lookup_answers_in_request_order_with_per_item_not_found(api, issued, default_pool, tome,
                                                                      tome_only_pair):
    available = TokenPair.objects.filter(pool=default_pool, status=PairStatus.AVAILABLE).first()
    tokens = [issued["USED"]["internal_token"], "9999000011112222", available.internal_token,
              tome_only_pair.internal_token, issued["RESERVED"]["internal_token"], issued["USED"]["internal_token"]]
    tome.reset_stats()
    response = api.post("/api/v1/lookup/batch", {"internal_tokens": tokens})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r.get("code") or r["status"] for r in results] == [
        "USED", "not_found", "not_found", "USED", "RESERVED", "USED"]
    assert results[1] == {"internal_token": "9999000011112222", "code": "not_found"}
    assert results[2] == {"internal_token": available.internal_token, "code": "not_found"}
    assert results[3]["source"] == "tome" and results[3]["external_ref_id"] == tome_only_pair.external_ref_id
    assert results[0] == results[5] and results[0]["source"] == "pool"
    assert tome.calls("ns2", "lookup") == 1  # the misses went to TOME in one call


def test_batch_detokenize(api, issued, tome):
    ids = [issued["RETIRED"]["external_ref_id"], "ext_not_there"]
    results = api.post("/api/v1/detokenize/batch", {"external_ref_ids": ids}).json()["results"]
    assert results[0]["internal_token"] == issued["RETIRED"]["internal_token"] and results[0]["status"] == "RETIRED"
    assert results[1] == {"external_ref_id": "ext_not_there", "code": "not_found"}


# ---- audit -----------------------------------------------------------------------------------------------

def test_every_lookup_and_detokenize_is_audited(api, issued, tome, tome_only_pair):
    used = issued["USED"]
    api.post("/api/v1/lookup", {"internal_token": used["internal_token"]}, HTTP_X_CORRELATION_ID="audit-1")
    api.post("/api/v1/detokenize", {"external_ref_id": "ext_zzz"}, HTTP_X_CORRELATION_ID="audit-2")
    api.post("/api/v1/lookup/batch", {"internal_tokens": [used["internal_token"], tome_only_pair.internal_token,
                                                          "404404404"]}, HTTP_X_CORRELATION_ID="audit-3")
    records = list(AuditRecord.objects.order_by("id"))
    assert [(r.action, r.outcome, r.correlation_id) for r in records] == [
        ("lookup", "found", "audit-1"), ("detokenize", "not_found", "audit-2"),
        ("lookup", "found", "audit-3"), ("lookup", "tome", "audit-3"), ("lookup", "not_found", "audit-3"),
    ]
    pair = TokenPair.objects.get(internal_token=used["internal_token"])
    assert records[0].pair_id == pair.pk and records[0].api_key_id == api.api_key.pk
    assert records[0].token_digest == digest(used["internal_token"])
    assert records[1].token_digest == digest("ext_zzz") and records[1].pair_id is None
    # the raw token is nowhere in the audit table
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM core_auditrecord WHERE token_digest = %s OR correlation_id = %s",
                       [used["internal_token"], used["internal_token"]])
        assert cursor.fetchone()[0] == 0


def test_audit_records_are_append_only(api, issued, tome):
    api.post("/api/v1/lookup", {"internal_token": issued["USED"]["internal_token"]})
    record = AuditRecord.objects.get()
    record.outcome = "not_found"
    with pytest.raises(AppendOnlyError):
        record.save()
    with pytest.raises(AppendOnlyError):
        record.delete()
    with pytest.raises(AppendOnlyError):
        AuditRecord.objects.filter(pk=record.pk).update(outcome="not_found")
    with pytest.raises(AppendOnlyError):
        AuditRecord.objects.all().delete()
    for sql in ("UPDATE core_auditrecord SET outcome = 'not_found'", "DELETE FROM core_auditrecord"):
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
    assert AuditRecord.objects.get().outcome == "found"
