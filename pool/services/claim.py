"""The reservation claim: the statement every reservation runs, in one place.

The claim is SQL on purpose: one statement, one round trip, committed on its own in autocommit.
`FOR UPDATE SKIP LOCKED` lets concurrent claimers step over each other's rows instead of queueing
behind them. If another transaction changed the row after our snapshot, the row lock re-checks
`status = 'AVAILABLE'` and moves on, so a pair can only ever leave AVAILABLE once. The ORM
equivalent (select_for_update + save in atomic) needs 4 round trips; see docs/benchmarks.md.

Two properties are built in rather than left to the planner's statistics (docs/benchmarks.md,
"Claim at any table shape"; tests/claim/):

- **Only `pair_available_idx` can answer the inner SELECT cheaply.** It asks for
  `(pool_id, id) > (pool, after) AND pool_id <= pool ... ORDER BY pool_id, id`. With
  `pool_id = <constant>` PostgreSQL drops `pool_id` from the ORDER BY and the primary key (in id
  order) satisfies it too; when AVAILABLE is a large share of the table the planner then prefers
  the primary key, assuming AVAILABLE rows are spread evenly over the ids, while claims consume the
  lowest ids first and every issued pair sits in front of every available one: 66 ms and 248k rows
  filtered per claim instead of 0.05 ms. A range on `pool_id` keeps `pool_id` in the ORDER BY, so
  the primary key can only serve it with a full scan and a sort, and the row comparison is an index
  condition of `(pool_id, id)` alone.
- **A claim starts where this process's last claim ended** (`after`), not at the front of the index.
  Each issued pair leaves a dead entry in `pair_available_idx`; while anything holds back VACUUM
  (a long report, pg_dump, an idle-in-transaction session) those entries pile up at the front and a
  claim from the front steps over all of them (11 % of the undisturbed rate within 40 s on a 2.2M-row
  table). From the process's cursor a claim steps over only what other processes claimed since its
  own last claim. When nothing is left after the cursor (the end of the pool, or pairs left behind
  by a rolled-back claim or a row another claimer had locked), the claim starts again at the front,
  so the cursor never hides a pair. The cursor is per process and per pool, in memory: a new process
  starts at the front once; it is a hint, never a correctness condition.

The outer UPDATE deliberately does not repeat `status = 'AVAILABLE'`: the pick already holds the row
lock and re-checked the status on the row's latest version, so nothing can change it before the
UPDATE; and with that condition the partial index becomes a candidate for the outer probe too (seen
before ANALYZE: a full walk of `pair_available_idx` per batch instead of one primary-key probe per id).
"""
from __future__ import annotations

from typing import cast

from pool.models import TokenPair
from pool.services.rows import RETURNING, fetch, pairs_from_rows

# The claim statements are published so tools (bench/, tests/claim/) replay exactly the statement the service runs.
# CLAIM_PICK_SQL: the inner SELECT of both (a template: ``{limit}``; see the module docstring for its spelling).
CLAIM_PICK_SQL = """
    SELECT id FROM core_tokenpair
     WHERE (pool_id, id) > (%(pool)s, %(after)s) AND pool_id <= %(pool)s AND status = 'AVAILABLE'
     ORDER BY pool_id, id LIMIT {limit}
       FOR UPDATE SKIP LOCKED"""

CLAIM_ONE_SQL = f"""
UPDATE core_tokenpair AS t
   SET status = 'RESERVED', reservation_id = gen_random_uuid(), reserved_by_id = %(api_key)s,
       owner_ref = %(owner_ref)s, idempotency_key = %(idempotency_key)s,
       idempotency_index = %(idempotency_index)s, request_fingerprint = %(fingerprint)s,
       reserved_at = now(), expires_at = now() + %(ttl)s
 WHERE t.id = ({CLAIM_PICK_SQL.format(limit="1")})
RETURNING 0, {RETURNING}
"""

# Several rows: the CTE is MATERIALIZED because `WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP
# LOCKED)` may be re-run by the planner and update more than n rows (PostgreSQL bug #15715). It is
# all-or-nothing inside the one statement: unless exactly n rows could be locked nothing is updated
# (the locks die with the statement), so a batch never leaves a partial claim behind.
CLAIM_EXACTLY_SQL = f"""
WITH picked AS MATERIALIZED ({CLAIM_PICK_SQL.format(limit="%(count)s")}
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
 WHERE t.id = numbered.id AND numbered.picked_count = %(count)s
RETURNING numbered.idx, {RETURNING}
"""

# pool id -> the highest pair id this process claimed last (threads share it: a dict get/set is
# atomic under the GIL, and a stale value only costs a few extra index entries or one wrap-around).
_cursor: dict[int, int] = {}


def claim_pairs(*, params: dict[str, object], count: int) -> list[TokenPair]:
    """Claim exactly ``count`` pool pairs in one statement, or none at all.

    ``params``: pool, api_key, owner_ref, idempotency_key, fingerprint, ttl (see the SQL). In
    autocommit the statement commits on its own; inside ``transaction.atomic`` it joins it."""
    pool_id = int(cast(int, params["pool"]))
    after = _cursor.get(pool_id, 0)
    pairs = _claim_after(params=params, count=count, after=after)
    if not pairs and after:
        # Nothing (or not enough) after the cursor: wrap around to the front of the pool.
        pairs = _claim_after(params=params, count=count, after=0)
    if pairs:
        _cursor[pool_id] = max(pair.pk for pair in pairs)
    else:
        _cursor.pop(pool_id, None)
    return pairs


def claim_cursor_reset() -> None:
    """Forget every pool's cursor (tests; the next claim of each pool starts at the front)."""
    _cursor.clear()


def _claim_after(*, params: dict[str, object], count: int, after: int) -> list[TokenPair]:
    if count == 1:
        rows = fetch(CLAIM_ONE_SQL, {**params, "after": after,
                                      "idempotency_index": 0 if params["idempotency_key"] else None})
    else:
        rows = fetch(CLAIM_EXACTLY_SQL, {**params, "after": after, "count": count})
    rows.sort(key=lambda row: row[0])
    return pairs_from_rows(rows, leading=1)
