"""The claim with its per-process cursor: it starts after this process's last claim, wraps around to
the front when nothing is left after it, and never hands out a pair twice under concurrency."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from django.db import connection

from pool.models import PairStatus, TokenPair
from pool.services import claim
from pool.services.reservations import reservation_batch_create, reservation_create


@pytest.fixture(autouse=True)
def _fresh_cursor() -> Iterator[None]:
    claim.claim_cursor_reset()
    yield
    claim.claim_cursor_reset()


def params(pool, key) -> dict:  # noqa: ANN001
    return {"pool": pool.pk, "api_key": key.pk, "owner_ref": None, "idempotency_key": None, "fingerprint": None,
            "ttl": pool.reservation_ttl}


def available_ids(pool) -> list[int]:  # noqa: ANN001
    return list(TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).order_by("id")
                .values_list("id", flat=True))


@pytest.mark.django_db
def test_a_claim_starts_after_the_process_cursor(make_pool, make_api_key):
    pool = make_pool("cursor-start", pairs=6)
    key, _ = make_api_key(scopes=["reserve"])
    ids = available_ids(pool)

    claim._cursor[pool.pk] = ids[2]  # as if this process had just claimed the third pair
    first = claim.claim_pairs(params=params(pool, key), count=1)
    second = claim.claim_pairs(params=params(pool, key), count=2)

    assert [p.pk for p in first] == [ids[3]]
    assert [p.pk for p in second] == ids[4:6]
    assert claim._cursor[pool.pk] == ids[5]


@pytest.mark.django_db
def test_nothing_after_the_cursor_wraps_around_to_the_front(make_pool, make_api_key):
    pool = make_pool("cursor-wrap", pairs=6)
    key, _ = make_api_key(scopes=["reserve"])
    ids = available_ids(pool)

    claim._cursor[pool.pk] = ids[-1]  # past every pair of the pool
    single = claim.claim_pairs(params=params(pool, key), count=1)
    claim._cursor[pool.pk] = ids[3]  # two pairs after it, a batch of four wanted: all from the front
    batch = claim.claim_pairs(params=params(pool, key), count=4)

    assert [p.pk for p in single] == [ids[0]]
    assert [p.pk for p in batch] == ids[1:5]
    assert available_ids(pool) == [ids[5]]
    assert claim.claim_pairs(params=params(pool, key), count=2) == []  # not enough anywhere: nothing
    assert available_ids(pool) == [ids[5]]


@pytest.mark.django_db(transaction=True)  # the other session must see the pairs
def test_a_pair_locked_by_another_claimer_is_found_later_behind_the_cursor(make_pool, make_api_key):
    """A row someone else held when we passed it (their claim then rolled back) stays AVAILABLE
    behind our cursor; the wrap-around hands it out once the rest is gone."""
    pool = make_pool("cursor-behind", pairs=3)
    key, _ = make_api_key(scopes=["reserve"])
    ids = available_ids(pool)
    other = connection.copy()
    try:
        with other.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("SELECT id FROM core_tokenpair WHERE id = %s FOR UPDATE", [ids[0]])
            assert cursor.fetchone() == (ids[0],)
            got = [p.pk for p in claim.claim_pairs(params=params(pool, key), count=1)]
            cursor.execute("ROLLBACK")
    finally:
        other.close()
    got += [p.pk for p in claim.claim_pairs(params=params(pool, key), count=1)]
    got += [p.pk for p in claim.claim_pairs(params=params(pool, key), count=1)]

    assert got == [ids[1], ids[2], ids[0]]


@pytest.mark.django_db(transaction=True)
def test_concurrent_single_and_batch_reservations_never_hand_out_a_pair_twice(make_pool, make_api_key,
                                                                               run_concurrently):
    pool = make_pool("cursor-race", pairs=400, refill_enabled=False)
    key, _ = make_api_key(scopes=["reserve"])

    def singles() -> list[int]:
        return [reservation_create(pool=pool, api_key=key, idempotency_key=None, owner_ref=None)[0].pk
                for _ in range(25)]

    def batches() -> list[int]:
        got: list[int] = []
        for _ in range(5):
            pairs, _created = reservation_batch_create(pool=pool, api_key=key, count=10, idempotency_key=None)
            got.extend(p.pk for p in pairs)
        return got

    results = run_concurrently(singles, singles, singles, singles, batches, batches, batches, batches)
    handed_out = [pk for result in results for pk in result]

    assert len(handed_out) == 4 * 25 + 4 * 50
    assert not [pk for pk, n in Counter(handed_out).items() if n > 1]
    reserved = set(TokenPair.objects.filter(pool=pool, status=PairStatus.RESERVED).values_list("id", flat=True))
    assert reserved == set(handed_out)
    assert TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).count() == 400 - len(handed_out)
