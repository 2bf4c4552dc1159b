"""POST /api/v1/reservations/confirm/batch (contract section 2) and release/batch (the buffered
client's close()): each item as its single form, answered in request order."""
from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from pool.models import PairStatus, TokenPair

pytestmark = pytest.mark.django_db


def _reserve(api, count):
    response = api.post("/api/v1/reservations/batch", {"count": count})
    assert response.status_code == 201, response.content
    return [r["reservation_id"] for r in response.json()["reservations"]]


def test_confirm_batch_answers_each_item_as_its_single_confirm_in_request_order(api, api_as, make_api_key,
                                                                              default_pool):
    fresh, used, released, expired = _reserve(api, 4)
    api.post(f"/api/v1/reservations/{used}/confirm")
    api.post(f"/api/v1/reservations/{released}/release")
    past = timezone.now() - timedelta(hours=1)
    TokenPair.objects.filter(reservation_id=expired).update(reserved_at=past - timedelta(minutes=15), expires_at=past)
    _, other_raw = make_api_key()
    others = api_as(other_raw).post("/api/v1/reservations", {}).json()["reservation_id"]
    unknown = str(uuid.uuid4())
    ids = [released, fresh, unknown, used, expired, others, fresh]

    response = api.post("/api/v1/reservations/confirm/batch", {"reservation_ids": ids})

    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [r["reservation_id"] for r in results] == ids
    assert [r.get("code") for r in results] == ["reservation_not_active", None, "not_found", None,
                                                "reservation_not_active", "not_found", None]
    assert results[1]["status"] == results[3]["status"] == results[6]["status"] == "USED"
    assert results[1]["internal_token"] == TokenPair.objects.get(reservation_id=fresh).internal_token
    statuses = dict(TokenPair.objects.filter(reservation_id__in=[fresh, expired, others])
                    .values_list("reservation_id", "status"))
    assert statuses[uuid.UUID(fresh)] == PairStatus.USED
    assert statuses[uuid.UUID(expired)] == PairStatus.RETIRED  # its lease was over: retired, as single confirm does
    assert statuses[uuid.UUID(others)] == PairStatus.RESERVED  # another key's reservation is untouched


def test_release_batch_retires_reserved_pairs_and_refuses_used_ones(api, default_pool):
    fresh, used, released = _reserve(api, 3)
    api.post(f"/api/v1/reservations/{used}/confirm")
    api.post(f"/api/v1/reservations/{released}/release")
    unknown = str(uuid.uuid4())

    response = api.post("/api/v1/reservations/release/batch", {"reservation_ids": [fresh, used, released, unknown]})

    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [r.get("code") for r in results] == [None, "reservation_not_active", None, "not_found"]
    assert results[0]["status"] == results[2]["status"] == "RETIRED"
    assert TokenPair.objects.get(reservation_id=fresh).status == PairStatus.RETIRED
    assert TokenPair.objects.get(reservation_id=used).status == PairStatus.USED


@pytest.mark.parametrize("path", ["confirm", "release"])
@pytest.mark.parametrize(("ids", "field"), [
    (["not-a-uuid"], "reservation_ids.0"),
    ([str(uuid.uuid4()), 42], "reservation_ids.1"),
    ([], "reservation_ids"),
    ([str(uuid.uuid4())] * 501, "reservation_ids"),
])
def test_a_malformed_batch_is_a_400_naming_the_item(api, default_pool, path, ids, field):
    rid = _reserve(api, 1)[0]
    response = api.post(f"/api/v1/reservations/{path}/batch", {"reservation_ids": ids})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_request" and field in body["errors"], body
    assert TokenPair.objects.get(reservation_id=rid).status == PairStatus.RESERVED


def test_the_batch_endpoints_need_the_reserve_scope(api_as, make_api_key, default_pool):
    _, raw = make_api_key(scopes=["lookup"])
    for path in ("confirm", "release"):
        response = api_as(raw).post(f"/api/v1/reservations/{path}/batch", {"reservation_ids": [str(uuid.uuid4())]})
        assert response.status_code == 403


@pytest.mark.django_db(transaction=True)
def test_concurrent_confirm_and_release_batches_each_pair_ends_in_one_state(api, default_pool):
    ids = _reserve(api, 40)
    barrier = threading.Barrier(2)
    answers: dict[str, list] = {}

    def run(path: str, order: list[str]) -> None:
        try:
            barrier.wait()
            answers[path] = api.post(f"/api/v1/reservations/{path}/batch", {"reservation_ids": order}).json()["results"]
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=("confirm", ids)),
               threading.Thread(target=run, args=("release", list(reversed(ids))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    confirmed = {r["reservation_id"] for r in answers["confirm"] if "code" not in r}
    released = {r["reservation_id"] for r in answers["release"] if "code" not in r}
    assert confirmed.isdisjoint(released) and confirmed | released == set(ids)
    rows = dict(TokenPair.objects.filter(reservation_id__in=ids).values_list("reservation_id", "status"))
    assert {str(k) for k, v in rows.items() if v == PairStatus.USED} == confirmed


def test_the_expiry_sweep_logs_what_it_retired_per_api_key(api, default_pool, caplog):
    from pool.services import reservations_expire

    _reserve(api, 3)
    with caplog.at_level("INFO", logger="pool.services.lifecycle"):
        assert reservations_expire(now=timezone.now() + timedelta(hours=1)) == 3
    [record] = [r for r in caplog.records if r.getMessage() == "expired leases retired"]
    assert record.by_api_key == {api.api_key.name: 3}


def test_leases_retired_by_expiry_are_counted_per_consumer_in_metrics(api, default_pool, scrape):
    from pool.services import reservations_expire
    from tests.fixtures.monitoring import sample_value

    consumer = {"consumer": api.api_key.consumer.name}
    before = sample_value(scrape(), "tokenpool_pairs_retired_expired_total", consumer) or 0
    swept = _reserve(api, 3)
    late = _reserve(api, 1)[0]
    past = timezone.now() - timedelta(hours=1)
    TokenPair.objects.filter(reservation_id=late).update(reserved_at=past - timedelta(minutes=15), expires_at=past)

    # A confirm that finds the lease over retires it (1), the sweep the other 3 (and `late` no more).
    assert api.post("/api/v1/reservations/confirm/batch", {"reservation_ids": [late]}).json()["results"][0]["code"] \
        == "reservation_not_active"
    assert reservations_expire(now=timezone.now() + timedelta(hours=1)) == len(swept)

    assert sample_value(scrape(), "tokenpool_pairs_retired_expired_total", consumer) == before + 4
