"""Reservation lifecycle through the HTTP API (contract section 2), single and batch."""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from common.errors import PoolNotFound
from pool.models import PairStatus, TokenPair
from pool.selectors import pool_get
from pool.services import reservations_expire

pytestmark = pytest.mark.django_db

RESERVATION_FIELDS = {"reservation_id", "pool", "internal_token", "external_ref_id", "status", "source",
                      "owner_ref", "reserved_at", "expires_at", "used_at"}


def _reserve(api, body=None, *, expect: int, **headers):
    """POST one reservation; ``expect`` is 201 for a new reservation, 200 for an idempotent replay."""
    response = api.post("/api/v1/reservations", body or {}, **headers)
    assert response.status_code == expect, response.content
    return response.json()


def test_reserve_returns_201_with_the_contract_body(api, default_pool):
    response = api.post("/api/v1/reservations", {})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == RESERVATION_FIELDS
    assert body["pool"] == "default" and body["status"] == "RESERVED" and body["source"] == "pool"
    assert body["owner_ref"] is None and body["used_at"] is None
    uuid.UUID(body["reservation_id"])
    pair = TokenPair.objects.get(reservation_id=body["reservation_id"])
    assert (pair.internal_token, pair.external_ref_id, pair.status) == (
        body["internal_token"], body["external_ref_id"], PairStatus.RESERVED)
    assert pair.reserved_by_id == api.api_key.pk


def test_the_hand_built_body_matches_the_documented_serializer(api, default_pool):
    from pool.api import ReservationOutput, reservation_body
    from pool.selectors import reservation_get

    rid = _reserve(api, {"owner_ref": "x"}, expect=201)["reservation_id"]
    api.post(f"/api/v1/reservations/{rid}/confirm")
    pair = reservation_get(reservation_id=rid, api_key=api.api_key)
    assert reservation_body(pair) == ReservationOutput(pair).data


def test_lease_is_the_pools_reservation_ttl(api, make_pool):
    make_pool("short-lease", pairs=2, reservation_ttl=timedelta(minutes=3))
    body = _reserve(api, {"pool": "short-lease", "owner_ref": "order-42"}, expect=201)
    reserved = timezone.datetime.fromisoformat(body["reserved_at"])
    expires = timezone.datetime.fromisoformat(body["expires_at"])
    assert expires - reserved == timedelta(minutes=3)
    assert body["owner_ref"] == "order-42" and body["pool"] == "short-lease"


def test_default_lease_is_fifteen_minutes(api, default_pool):
    body = _reserve(api, expect=201)
    assert (timezone.datetime.fromisoformat(body["expires_at"])
            - timezone.datetime.fromisoformat(body["reserved_at"])) == timedelta(minutes=15)


def test_unknown_fields_are_ignored(api, default_pool):
    response = api.post("/api/v1/reservations", {"pool": "default", "colour": "blue", "count": "x"})
    assert response.status_code == 201


def test_unknown_pool_is_404(api, default_pool):
    response = api.post("/api/v1/reservations", {"pool": "no-such-pool"})
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert api.post("/api/v1/reservations/batch", {"count": 2, "pool": "nope"}).status_code == 404


def test_get_returns_the_reservation(api, default_pool):
    body = _reserve(api, expect=201)
    response = api.get(f"/api/v1/reservations/{body['reservation_id']}")
    assert response.status_code == 200 and response.json() == body


@pytest.mark.parametrize("reservation_id", ["not-a-uuid", "12345", str(uuid.uuid4())])
def test_unknown_or_malformed_reservation_id_is_404(api, default_pool, reservation_id):
    for response in (api.get(f"/api/v1/reservations/{reservation_id}"),
                     api.post(f"/api/v1/reservations/{reservation_id}/confirm"),
                     api.post(f"/api/v1/reservations/{reservation_id}/release")):
        assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_another_keys_reservation_is_404(api, default_pool, make_api_key, api_as):
    body = _reserve(api, expect=201)
    _, other_raw = make_api_key(scopes=["reserve"])
    other = api_as(other_raw)
    rid = body["reservation_id"]
    for response in (other.get(f"/api/v1/reservations/{rid}"), other.post(f"/api/v1/reservations/{rid}/confirm"),
                     other.post(f"/api/v1/reservations/{rid}/release")):
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert TokenPair.objects.get(reservation_id=rid).status == PairStatus.RESERVED


def test_confirm_marks_used_and_is_idempotent(api, default_pool):
    rid = _reserve(api, {"owner_ref": "first"}, expect=201)["reservation_id"]
    first = api.post(f"/api/v1/reservations/{rid}/confirm", {"owner_ref": "card-7"})
    assert first.status_code == 200
    assert first.json()["status"] == "USED" and first.json()["used_at"] is not None
    assert first.json()["owner_ref"] == "card-7"
    again = api.post(f"/api/v1/reservations/{rid}/confirm", {})
    assert again.status_code == 200 and again.json() == first.json()
    assert TokenPair.objects.get(reservation_id=rid).status == PairStatus.USED


def test_confirm_without_owner_ref_keeps_the_reservations(api, default_pool):
    rid = _reserve(api, {"owner_ref": "kept"}, expect=201)["reservation_id"]
    assert api.post(f"/api/v1/reservations/{rid}/confirm").json()["owner_ref"] == "kept"


def test_release_retires_and_is_idempotent(api, default_pool):
    rid = _reserve(api, expect=201)["reservation_id"]
    first = api.post(f"/api/v1/reservations/{rid}/release", {})
    assert first.status_code == 200 and first.json()["status"] == "RETIRED"
    again = api.post(f"/api/v1/reservations/{rid}/release")
    assert again.status_code == 200 and again.json()["status"] == "RETIRED"
    pair = TokenPair.objects.get(reservation_id=rid)
    assert pair.status == PairStatus.RETIRED and pair.retired_at is not None


def test_confirming_a_retired_reservation_is_409(api, default_pool):
    rid = _reserve(api, expect=201)["reservation_id"]
    api.post(f"/api/v1/reservations/{rid}/release")
    response = api.post(f"/api/v1/reservations/{rid}/confirm")
    assert response.status_code == 409 and response.json()["code"] == "reservation_not_active"


def test_releasing_a_used_reservation_is_409(api, default_pool):
    rid = _reserve(api, expect=201)["reservation_id"]
    api.post(f"/api/v1/reservations/{rid}/confirm")
    response = api.post(f"/api/v1/reservations/{rid}/release")
    assert response.status_code == 409 and response.json()["code"] == "reservation_not_active"
    assert TokenPair.objects.get(reservation_id=rid).status == PairStatus.USED


def test_confirming_an_expired_lease_before_the_sweep_retires_it_and_is_409(api, default_pool):
    rid = _reserve(api, expect=201)["reservation_id"]
    TokenPair.objects.filter(reservation_id=rid).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = api.post(f"/api/v1/reservations/{rid}/confirm")
    assert response.status_code == 409 and response.json()["code"] == "reservation_not_active"
    assert TokenPair.objects.get(reservation_id=rid).status == PairStatus.RETIRED


def test_expiry_sweep_retires_past_leases_and_never_makes_them_available(api, default_pool):
    expired = _reserve(api, expect=201)["reservation_id"]
    live = _reserve(api, expect=201)["reservation_id"]
    TokenPair.objects.filter(reservation_id=expired).update(expires_at=timezone.now() - timedelta(minutes=1))
    available_before = TokenPair.objects.filter(pool=default_pool, status=PairStatus.AVAILABLE).count()

    assert reservations_expire() == 1
    assert TokenPair.objects.get(reservation_id=expired).status == PairStatus.RETIRED
    assert TokenPair.objects.get(reservation_id=live).status == PairStatus.RESERVED
    assert TokenPair.objects.filter(pool=default_pool, status=PairStatus.AVAILABLE).count() == available_before
    # a later "now" catches the live one too; the limit bounds each run
    assert reservations_expire(now=timezone.now() + timedelta(hours=1), limit=10) == 1
    assert api.get(f"/api/v1/reservations/{live}").json()["status"] == "RETIRED"


def test_expiry_sweep_respects_its_limit(api, default_pool):
    for _ in range(3):
        _reserve(api, expect=201)
    later = timezone.now() + timedelta(hours=1)
    assert reservations_expire(now=later, limit=2) == 2
    assert reservations_expire(now=later, limit=2) == 1
    assert reservations_expire(now=later) == 0


def test_a_pair_leaves_available_only_once(api, make_pool):
    pool = make_pool("tiny", pairs=3)
    ids = {_reserve(api, {"pool": "tiny"}, expect=201)["internal_token"] for _ in range(3)}
    assert len(ids) == 3
    assert not TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).exists()


# ---- idempotency ------------------------------------------------------------------------------------

def test_same_idempotency_key_and_body_returns_the_same_reservation(api, default_pool):
    first = _reserve(api, {"owner_ref": "o-1"}, expect=201, HTTP_IDEMPOTENCY_KEY="req-1")
    second = _reserve(api, {"owner_ref": "o-1"}, expect=200, HTTP_IDEMPOTENCY_KEY="req-1")
    assert second == first
    assert TokenPair.objects.filter(idempotency_key="req-1").count() == 1


def test_defaults_make_equivalent_bodies_the_same_request(api, default_pool):
    first = _reserve(api, expect=201, HTTP_IDEMPOTENCY_KEY="req-2")
    second = _reserve(api, {"pool": "default", "ignored": 1}, expect=200, HTTP_IDEMPOTENCY_KEY="req-2")
    assert second["reservation_id"] == first["reservation_id"]


def test_same_idempotency_key_with_another_body_is_422(api, default_pool):
    _reserve(api, {"owner_ref": "a"}, expect=201, HTTP_IDEMPOTENCY_KEY="req-3")
    response = api.post("/api/v1/reservations", {"owner_ref": "b"}, HTTP_IDEMPOTENCY_KEY="req-3")
    assert response.status_code == 422 and response.json()["code"] == "idempotency_key_reused"
    batch = api.post("/api/v1/reservations/batch", {"count": 1, "owner_ref": "a"}, HTTP_IDEMPOTENCY_KEY="req-3")
    assert batch.status_code == 422


def test_idempotency_keys_are_scoped_to_the_api_key(api, default_pool, make_api_key, api_as):
    first = _reserve(api, expect=201, HTTP_IDEMPOTENCY_KEY="shared")
    other = api_as(make_api_key(scopes=["reserve"])[1])
    second = _reserve(other, expect=201, HTTP_IDEMPOTENCY_KEY="shared")  # new for this key, not a replay
    assert second["reservation_id"] != first["reservation_id"]


def test_replay_reflects_the_current_state(api, default_pool):
    rid = _reserve(api, expect=201, HTTP_IDEMPOTENCY_KEY="req-4")["reservation_id"]
    api.post(f"/api/v1/reservations/{rid}/confirm")
    assert _reserve(api, expect=200, HTTP_IDEMPOTENCY_KEY="req-4")["status"] == "USED"


# "key-1\n": a trailing newline, which a `$`-anchored match alone would let through.
@pytest.mark.parametrize("key", ["", "k" * 256, "a\tb", "a b", "key/1", "clé", "a;b", "{x}", "key-1\n"])
@pytest.mark.parametrize("path,body", [("/api/v1/reservations", {}), ("/api/v1/reservations/batch", {"count": 1})])
def test_idempotency_key_must_match_its_pattern(api, default_pool, key, path, body):
    """Issue 20 finding 8 (schemathesis ST201): a tab, a space, a slash... was accepted and stored."""
    from pool.models import TokenPair

    response = api.post(path, body, HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 400 and response.json()["code"] == "invalid_request"
    assert "Idempotency-Key" in response.json()["errors"]
    assert not TokenPair.objects.filter(idempotency_key=key).exists()


def test_the_schema_states_the_idempotency_key_pattern(api):
    from rest_framework.test import APIClient

    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path in ("/api/v1/reservations", "/api/v1/reservations/batch"):
        header = next(p for p in schema["paths"][path]["post"]["parameters"] if p["name"] == "Idempotency-Key")
        assert header["schema"]["pattern"] == "^[A-Za-z0-9._:-]{1,255}$"


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_idempotency_key_must_be_1_to_255_characters(api, default_pool, key):
    response = api.post("/api/v1/reservations", {}, HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 400 and response.json()["code"] == "invalid_request"
    assert "Idempotency-Key" in response.json()["errors"]
    assert api.post("/api/v1/reservations", {}, HTTP_IDEMPOTENCY_KEY="k" * 255).status_code == 201
    assert api.post("/api/v1/reservations", {}, HTTP_IDEMPOTENCY_KEY="Aa0._:-").status_code == 201


# ---- batch ----------------------------------------------------------------------------------------------

def test_batch_reserves_count_distinct_pairs(api, default_pool):
    response = api.post("/api/v1/reservations/batch", {"count": 7})
    assert response.status_code == 201
    reservations = response.json()["reservations"]
    assert len(reservations) == 7
    assert all(set(r) == RESERVATION_FIELDS and r["status"] == "RESERVED" for r in reservations)
    assert len({r["internal_token"] for r in reservations}) == 7
    assert len({r["reservation_id"] for r in reservations}) == 7
    assert TokenPair.objects.filter(reserved_by=api.api_key, status=PairStatus.RESERVED).count() == 7


def test_batch_idempotency_returns_the_same_set_in_order(api, default_pool):
    first = api.post("/api/v1/reservations/batch", {"count": 5}, HTTP_IDEMPOTENCY_KEY="batch-1")
    second = api.post("/api/v1/reservations/batch", {"count": 5}, HTTP_IDEMPOTENCY_KEY="batch-1")
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json() == first.json()
    different = api.post("/api/v1/reservations/batch", {"count": 6}, HTTP_IDEMPOTENCY_KEY="batch-1")
    assert different.status_code == 422 and different.json()["code"] == "idempotency_key_reused"


@pytest.mark.parametrize("body", [{}, {"count": 0}, {"count": 501}, {"count": "5"}, {"count": 5.0},
                                  {"count": True}, {"count": None}])
def test_batch_count_must_be_an_integer_from_1_to_500(api, default_pool, body):
    response = api.post("/api/v1/reservations/batch", body)
    assert response.status_code == 400 and response.json()["code"] == "invalid_request"
    assert "count" in response.json()["errors"]


def test_batch_of_500_is_allowed(api, make_pool):
    make_pool("big", pairs=500)
    response = api.post("/api/v1/reservations/batch", {"count": 500, "pool": "big"})
    assert response.status_code == 201 and len(response.json()["reservations"]) == 500


def test_pool_edits_apply_to_the_next_reservation(api, make_pool):
    pool = make_pool("editable", pairs=3)
    _reserve(api, {"pool": "editable"}, expect=201)  # the pool is now cached for the hot path
    pool.reservation_ttl = timedelta(minutes=2)
    pool.save()
    body = _reserve(api, {"pool": "editable"}, expect=201)
    assert (timezone.datetime.fromisoformat(body["expires_at"])
            - timezone.datetime.fromisoformat(body["reserved_at"])) == timedelta(minutes=2)


def test_pool_get_defaults_to_the_default_pool_and_refuses_unknown_names():
    assert pool_get(name=None).name == "default"
    assert pool_get(name="default").name == "default"
    with pytest.raises(PoolNotFound):
        pool_get(name="missing")
