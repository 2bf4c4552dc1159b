"""The confirm/release batch statements' plans do not depend on the table's statistics.

A table last analysed while full of AVAILABLE pairs (right after a refill) estimates the RESERVED
rows at about one; with a status condition in the batch statements the planner then took
`pair_lease_expiry_idx` and compared each of a batch's ids with every live lease in a nested loop
(0.5-0.9 s per 500 ids among 10,000 leases, seconds under load: the 2 × 8 buffered clients' query
deadline cuts and worker timeouts, docs/benchmarks.md "Buffered client"). Plans are a property of
the statement and the statistics, so this is checked with EXPLAIN, not with a clock."""
from __future__ import annotations

import re

import pytest
from django.db import connection

from pool.services import lifecycle, reservation_batch_create

pytestmark = pytest.mark.django_db


def _plan(sql: str, params: dict[str, object]) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(re.sub(r"'\{[^}]*\}'", "'{…}'", row[0]) for row in cursor.fetchall())


@pytest.mark.parametrize("statement", ["_CONFIRM_MANY_SQL", "_RELEASE_MANY_SQL"])
def test_a_batch_never_joins_the_live_leases_even_with_stale_statistics(make_pool, api_key, statement):
    pool = make_pool("plan", pairs=4000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE core_tokenpair")  # every pair AVAILABLE: RESERVED estimated at ~1 row
    key = api_key[0]
    reserved = [p.reservation_id for _ in range(5)
                for p in reservation_batch_create(pool=pool, api_key=key, count=500, idempotency_key=None)[0]]
    for start in range(0, 2000, 500):  # the key's history: pairs it reserved and used
        lifecycle.reservations_confirm_batch(reservation_ids=reserved[start:start + 500], api_key=key)

    plan = _plan(getattr(lifecycle, statement), {"ids": reserved[2000:], "api_key": key.pk})

    # Found by reservation_id (or a scan of a small table), updated by primary key: never the
    # partial index of live leases or the key's history, never a join filter comparing every
    # lease with every id.
    indexes = set(re.findall(r"(?:using|Index Scan on) (\w+)", plan))
    assert indexes <= {"core_tokenpair_reservation_id_key", "core_tokenpair_pkey", "core_pool_pkey"}, plan
    assert "Join Filter" not in plan, plan
    assert "Index Scan using core_tokenpair_pkey on core_tokenpair t" in plan, plan
