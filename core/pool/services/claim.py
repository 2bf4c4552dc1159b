"""The reservation claim: the statement every reservation runs, in one place.

The claim is SQL on purpose: one statement, one round trip, committed on its own in autocommit.
`FOR UPDATE SKIP LOCKED` lets concurrent claimers step over each other's rows instead of queueing
behind them; the inner SELECT walks the partial index `pair_available_idx (pool_id, id) WHERE
status = 'AVAILABLE'` in id order (dropping ORDER BY is 2-2.5x slower: the planner then scans the
table). If another transaction changed the row after our snapshot, the row lock re-checks
`status = 'AVAILABLE'` and moves on, so a pair can only ever leave AVAILABLE once. The ORM
equivalent (select_for_update + save in atomic) needs 4 round trips; see docs/benchmarks.md."""
from __future__ import annotations

from core.pool.models import TokenPair
from core.pool.services.rows import RETURNING, fetch, pairs_from_rows

_CLAIM_ONE_SQL = f"""
UPDATE core_tokenpair AS t
   SET status = 'RESERVED', reservation_id = gen_random_uuid(), reserved_by_id = %(api_key)s,
       owner_ref = %(owner_ref)s, idempotency_key = %(idempotency_key)s,
       idempotency_index = %(idempotency_index)s, request_fingerprint = %(fingerprint)s,
       reserved_at = now(), expires_at = now() + %(ttl)s
 WHERE t.id = (SELECT id FROM core_tokenpair
                WHERE pool_id = %(pool)s AND status = 'AVAILABLE'
                ORDER BY id LIMIT 1
                  FOR UPDATE SKIP LOCKED)
   AND t.status = 'AVAILABLE'
RETURNING 0, {RETURNING}
"""

# Several rows: the CTE is MATERIALIZED because `WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP
# LOCKED)` may be re-run by the planner and update more than n rows (PostgreSQL bug #15715). It is
# all-or-nothing inside the one statement: unless exactly n rows could be locked nothing is updated
# (the locks die with the statement), so a batch never leaves a partial claim behind.
_CLAIM_EXACTLY_SQL = f"""
WITH picked AS MATERIALIZED (
    SELECT id FROM core_tokenpair
     WHERE pool_id = %(pool)s AND status = 'AVAILABLE'
     ORDER BY id LIMIT %(count)s
       FOR UPDATE SKIP LOCKED
), numbered AS (
    SELECT id, (row_number() OVER (ORDER BY id) - 1)::int AS idx, count(*) OVER () AS picked_count
      FROM picked
)
UPDATE core_tokenpair AS t
   SET status = 'RESERVED', reservation_id = gen_random_uuid(), reserved_by_id = %(api_key)s,
       owner_ref = %(owner_ref)s, idempotency_key = %(idempotency_key)s,
       idempotency_index = CASE WHEN %(idempotency_key)s::text IS NULL THEN NULL ELSE numbered.idx END,
       request_fingerprint = %(fingerprint)s,
       reserved_at = now(), expires_at = now() + %(ttl)s
  FROM numbered
 WHERE t.id = numbered.id AND numbered.picked_count = %(count)s AND t.status = 'AVAILABLE'
RETURNING numbered.idx, {RETURNING}
"""


def claim_pairs(*, params: dict[str, object], count: int) -> list[TokenPair]:
    """Claim exactly ``count`` pool pairs in one statement, or none at all.

    ``params``: pool, api_key, owner_ref, idempotency_key, fingerprint, ttl (see the SQL). In
    autocommit the statement commits on its own; inside ``transaction.atomic`` it joins it."""
    if count == 1:
        rows = fetch(_CLAIM_ONE_SQL, {**params, "idempotency_index": 0 if params["idempotency_key"] else None})
    else:
        rows = fetch(_CLAIM_EXACTLY_SQL, {**params, "count": count})
    rows.sort(key=lambda row: row[0])
    return pairs_from_rows(rows, leading=1)
