"""The claim's plan is robust by construction: on the shapes that made the planner walk the primary
key (several pools, history in front, AVAILABLE from 1 % to 90 % of the table, just after a bulk
insert and before ANALYZE, and after it) the inner SELECT is an index scan of pair_available_idx,
with no Sort, no sequential or bitmap scan and no primary-key scan with a filter."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection

from bench.claim_bench import NAIVE_PICK_SQL as NAIVE_PICK
from pool.services.claim import CLAIM_EXACTLY_SQL, CLAIM_ONE_SQL

# NAIVE_PICK: the statement as it shipped before, `pool_id = X ... ORDER BY id` (kept to prove the
# shape really is a cliff: on the analyzed 90 % shape the planner takes the primary key for it).

TOTAL_ROWS = 30_000


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def explain(sql: str, params: dict[str, Any]) -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        raw = cursor.fetchone()[0]
    return (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]


def build_shape(*, pools: list[Any], available_share: float, analyze_after_insert: bool) -> None:
    """History first (USED pairs of every pool, interleaved, lowest ids), ANALYZE, then one bulk
    insert of AVAILABLE pairs into the last pool; ANALYZE again only if asked."""
    available = int(TOTAL_ROWS * available_share)
    history = TOTAL_ROWS - available
    ids = [p.pk for p in pools]
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO core_tokenpair (pool_id, internal_token, external_ref_id, status, source, created_at,"
            " reservation_id, reserved_at, used_at)"
            " SELECT (%(ids)s::bigint[])[1 + i %% cardinality(%(ids)s::bigint[])], 'plan-h' || i, 'plan-he' || i,"
            " 'USED', 'pool', now(), gen_random_uuid(), now(), now() FROM generate_series(1, %(n)s) AS i",
            {"ids": ids, "n": history})
        cursor.execute("ANALYZE core_tokenpair")
        cursor.execute(
            "INSERT INTO core_tokenpair (pool_id, internal_token, external_ref_id, status, source, created_at)"
            " SELECT %(pool)s, 'plan-a' || i, 'plan-ae' || i, 'AVAILABLE', 'pool', now()"
            " FROM generate_series(1, %(n)s) AS i", {"pool": ids[-1], "n": available})
        if analyze_after_insert:
            cursor.execute("ANALYZE core_tokenpair")


def claim_params(pool: Any, api_key: Any, *, after: int, count: int = 1) -> dict[str, Any]:
    return {"pool": pool.pk, "api_key": api_key.pk, "owner_ref": None, "idempotency_key": None,
            "idempotency_index": None, "fingerprint": None, "ttl": pool.reservation_ttl, "after": after,
            "count": count}


def assert_claims_through_the_available_index(plan: dict[str, Any]) -> None:
    # The pick is the FOR UPDATE SKIP LOCKED SELECT: a LockRows node and what it reads.
    picks = [n for n in nodes(plan) if n["Node Type"] == "LockRows"]
    assert len(picks) == 1, plan
    below = list(nodes(picks[0]))
    assert not {n["Node Type"] for n in below} & {"Seq Scan", "Bitmap Heap Scan", "Sort", "Incremental Sort"}, below
    scans = [n for n in below if "Scan" in n["Node Type"]]
    assert [(n["Node Type"], n.get("Index Name")) for n in scans] == [("Index Scan", "pair_available_idx")], scans
    # Elsewhere the pairs table is only probed by primary key for the id(s) the pick found.
    for n in nodes(plan):
        if n.get("Relation Name") == "core_tokenpair" and "Scan" in n["Node Type"] and n not in below:
            assert n.get("Index Name") == "core_tokenpair_pkey" and "(id = " in n.get("Index Cond", ""), n


@pytest.mark.django_db
@pytest.mark.parametrize("available_share", [0.01, 0.5, 0.9])
@pytest.mark.parametrize("analyze_after_insert", [False, True], ids=["before-analyze", "analyzed"])
def test_claim_plan_uses_the_available_index_on_every_shape(make_pool, make_api_key, available_share,
                                                             analyze_after_insert):
    pools = [make_pool(f"plan-{n}") for n in ("a", "b", "c")]
    key, _ = make_api_key(scopes=["reserve"])
    build_shape(pools=pools, available_share=available_share, analyze_after_insert=analyze_after_insert)
    target = pools[-1]

    for after in (0, TOTAL_ROWS // 2):  # from the front and from a process's cursor
        assert_claims_through_the_available_index(explain(CLAIM_ONE_SQL, claim_params(target, key, after=after)))
        assert_claims_through_the_available_index(
            explain(CLAIM_EXACTLY_SQL, claim_params(target, key, after=after, count=100)))


@pytest.mark.django_db
def test_the_cliff_shape_is_real_for_the_old_statement(make_pool, make_api_key):
    """Guards the test above: on this shape the statement as it shipped walks the primary key with a
    filter, so a plan-shape assertion there can actually fail."""
    pools = [make_pool(f"cliff-{n}") for n in ("a", "b")]
    build_shape(pools=pools, available_share=0.9, analyze_after_insert=True)

    plan = list(nodes(explain(NAIVE_PICK, {"pool": pools[-1].pk})))

    pkey = [n for n in plan if n.get("Index Name") == "core_tokenpair_pkey"]
    assert pkey and "Filter" in pkey[0], plan
