"""Pool empty → pairs made live by TOME (`source: direct`); TOME down too → 503 pool_unavailable,
nothing written. Transactional: the fallback's TOME call must happen outside any transaction."""
from __future__ import annotations

import time

import pytest
from django.conf import settings

from pool.models import PairSource, PairStatus, TokenPair

pytestmark = pytest.mark.django_db(transaction=True)


def client_budget_seconds() -> float:
    """The longest the TOME client may take for one logical call (every attempt times out)."""
    per_attempt = settings.TOME_CONNECT_TIMEOUT + settings.TOME_READ_TIMEOUT + settings.TOME_POOL_TIMEOUT
    return settings.TOME_MAX_ATTEMPTS * (per_attempt + 1.0)  # + backoff (≤ 1 s) between attempts


def test_empty_pool_falls_back_to_a_live_direct_pair(api, make_pool, tome):
    pool = make_pool("empty", pairs=0)
    response = api.post("/api/v1/reservations", {"pool": "empty", "owner_ref": "o"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["source"] == "direct" and body["status"] == "RESERVED" and body["pool"] == "empty"
    pair = TokenPair.objects.get(reservation_id=body["reservation_id"])
    assert (pair.source, pair.status, pair.pool_id, pair.reserved_by_id) == (
        PairSource.DIRECT, PairStatus.RESERVED, pool.pk, api.api_key.pk)
    assert tome.calls("ns1", "generate") == 1 and tome.calls("ns2", "tokenize") == 1
    # a direct pair behaves like any other: confirm, lookup
    rid = body["reservation_id"]
    assert api.post(f"/api/v1/reservations/{rid}/confirm").json()["status"] == "USED"
    lookup = api.post("/api/v1/lookup", {"internal_token": body["internal_token"]}).json()
    assert lookup == {"internal_token": body["internal_token"], "external_ref_id": body["external_ref_id"],
                      "status": "USED", "source": "pool"}


def test_empty_pool_and_tome_down_is_503_and_writes_nothing(api, make_pool, tome):
    make_pool("empty", pairs=0)
    tome.set_faults(outage=True)
    before = TokenPair.objects.count()
    started = time.monotonic()
    response = api.post("/api/v1/reservations", {"pool": "empty"}, HTTP_IDEMPOTENCY_KEY="try-1")
    elapsed = time.monotonic() - started
    assert response.status_code == 503 and response.json()["code"] == "pool_unavailable"
    assert int(response["Retry-After"]) >= 1
    assert elapsed < client_budget_seconds()
    assert TokenPair.objects.count() == before
    # once TOME is back the same idempotent request succeeds
    tome.reset_faults()
    from tome.provider import reset_tome_client

    reset_tome_client()  # the outage opened the breaker; a fresh client is the "later"
    retry = api.post("/api/v1/reservations", {"pool": "empty"}, HTTP_IDEMPOTENCY_KEY="try-1")
    assert retry.status_code == 201 and retry.json()["source"] == "direct"


def test_batch_takes_what_the_pool_has_and_makes_the_rest_live(api, make_pool, tome):
    pool = make_pool("short", pairs=3)
    response = api.post("/api/v1/reservations/batch", {"pool": "short", "count": 5},
                        HTTP_IDEMPOTENCY_KEY="batch-fallback")
    assert response.status_code == 201, response.content
    reservations = response.json()["reservations"]
    assert [r["source"] for r in reservations] == ["pool"] * 3 + ["direct"] * 2
    assert not TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).exists()
    assert TokenPair.objects.filter(pool=pool, status=PairStatus.RESERVED).count() == 5
    assert tome.calls("ns1", "generate") == 1
    replay = api.post("/api/v1/reservations/batch", {"pool": "short", "count": 5},
                      HTTP_IDEMPOTENCY_KEY="batch-fallback")
    assert replay.status_code == 200 and replay.json() == response.json()


def test_batch_with_tome_down_is_all_or_nothing(api, make_pool, tome):
    pool = make_pool("short", pairs=3)
    tome.set_faults(outage=True)
    response = api.post("/api/v1/reservations/batch", {"pool": "short", "count": 5})
    assert response.status_code == 503 and response.json()["code"] == "pool_unavailable"
    assert TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).count() == 3
    assert not TokenPair.objects.exclude(status=PairStatus.AVAILABLE).exists()
    # what the pool does hold is still served
    assert api.post("/api/v1/reservations/batch", {"pool": "short", "count": 3}).status_code == 201


def test_full_pool_batch_never_calls_tome(api, make_pool, tome):
    make_pool("full", pairs=10)
    assert api.post("/api/v1/reservations/batch", {"pool": "full", "count": 10}).status_code == 201
    assert tome.stats().get("ns1", {}) == {}


def test_the_fallback_uses_the_pools_own_namespaces(api, make_pool, tome):
    make_pool("elsewhere", pairs=0, ns1_namespace="ns1-not-onboarded", ns2_namespace="ns2-not-onboarded")
    response = api.post("/api/v1/reservations", {"pool": "elsewhere"})
    # TOME refuses unknown namespaces: the pool cannot be served live, nothing is written
    assert response.status_code == 503 and response.json()["code"] == "pool_unavailable"
    assert tome.calls("ns1", "generate") == 0
    assert not TokenPair.objects.filter(pool__name="elsewhere").exists()


def test_hung_tome_answers_503_within_three_seconds_the_refill_keeps_its_retries(api, make_pool, tome):
    """Issue 20, finding 8: a hung TOME (every call stalls 20 s) must not outlast the client library's
    default 5 s timeout; the fallback answers 503 pool_unavailable within 3 s, nothing written."""
    from tome.provider import REQUEST, WORK, tome_client_config

    make_pool("empty", pairs=0)
    tome.set_faults(timeout_rate=1.0, timeout_seconds=20)
    before = TokenPair.objects.count()
    started = time.monotonic()
    response = api.post("/api/v1/reservations", {"pool": "empty"})
    elapsed = time.monotonic() - started
    assert response.status_code == 503 and response.json()["code"] == "pool_unavailable", response.content
    assert int(response["Retry-After"]) >= 1
    assert elapsed < 3.0, elapsed
    assert TokenPair.objects.count() == before
    # The refill's client is untouched: its retries and longer timeouts still ride out a flapping TOME.
    work, request = tome_client_config(budget=WORK), tome_client_config(budget=REQUEST)
    assert work.max_attempts == settings.TOME_MAX_ATTEMPTS >= 2
    assert (work.read_timeout, work.connect_timeout) == (settings.TOME_READ_TIMEOUT, settings.TOME_CONNECT_TIMEOUT)
    worst = request.max_attempts * (request.connect_timeout + request.read_timeout) * 2  # generate + tokenize
    assert worst + (request.max_attempts - 1) * request.backoff_max * 2 <= 3.0
