"""pairs_insert_bulk: how refills put TOME pairs into a pool (idempotent, inside the caller's transaction)."""
from __future__ import annotations

import pytest

from pool.models import PairStatus, TokenPair
from pool.services import pairs_insert_bulk
from tests.fixtures.pool import fake_pairs

pytestmark = pytest.mark.django_db


def test_bulk_insert_adds_available_pool_pairs_and_skips_duplicates(make_pool):
    pool = make_pool("bulk")
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


def test_bulk_insert_joins_the_callers_transaction(make_pool):
    from django.db import transaction

    pool = make_pool("bulk-tx")
    with pytest.raises(RuntimeError), transaction.atomic():
        pairs_insert_bulk(pool=pool, pairs=fake_pairs(10))
        raise RuntimeError("the refill batch failed after the insert")
    assert not TokenPair.objects.filter(pool=pool).exists()
