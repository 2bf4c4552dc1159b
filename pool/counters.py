"""Pairs per (pool, status, source), read from the trigger-kept counters instead of counting pairs.

The counters (``PairCounter``, pool migrations 0004 and 0006) are written only by PostgreSQL:
statement-level triggers on the pair table append each statement's net change as new rows, in the
same transaction. So a read here — a SUM over the folded rows and what was appended since — is
exactly what a ``COUNT(*)`` of the committed pairs would answer, at any table size; no reservation
waits on another's counter row, and none updates a row in place that an old snapshot could pin.

:func:`pair_counters_compact` folds the appended rows into shard 0 (run by the monitoring tasks every
minute), so the table stays small.
"""
from __future__ import annotations

from django.db import connection, transaction

from pool.models import PairCounter

__all__ = ["COUNTER_TABLE", "pair_counter_totals", "pair_counters_compact"]

COUNTER_TABLE = PairCounter._meta.db_table  # noqa: SLF001 - Model._meta is Django's documented Options API
# Advisory lock key of the compaction (ASCII "pcnt"): two compactions at once fold each row once.
COMPACT_LOCK_CLASS = 0x70636E74

# Every appended row (shard <> 0: one statement's delta, committed — uncommitted rows are invisible
# here), locked with SKIP LOCKED so the fold never waits on anything, deleted and added to shard 0 in one
# statement, keys in sorted order: totals never change. Rows are only ever inserted by the triggers, so
# nothing on the hot path is updated in place (pool migration 0006).
COMPACT_SQL = f"""
WITH dead AS (
    SELECT id FROM {COUNTER_TABLE} WHERE shard <> 0 ORDER BY id FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM {COUNTER_TABLE} c USING dead WHERE c.id = dead.id
    RETURNING c.pool_id, c.status, c.source, c.n
), folded AS (
    INSERT INTO {COUNTER_TABLE} (pool_id, status, source, shard, n)
    SELECT pool_id, status, source, 0, sum(n) FROM gone GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (pool_id, status, source, shard) DO UPDATE SET n = {COUNTER_TABLE}.n + EXCLUDED.n
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM folded)
"""  # noqa: S608 - table name from the model, no user input


def pair_counter_totals(*, pool_ids: list[int] | None = None) -> dict[int, dict[tuple[str, str], int]]:
    """pool id -> (status, source) -> pairs (only keys with pairs present; pools without any absent)."""
    sql = f"SELECT pool_id, status, source, sum(n) FROM {COUNTER_TABLE}"  # noqa: S608
    params: list[object] = []
    if pool_ids is not None:
        sql += " WHERE pool_id = ANY(%s)"
        params.append(pool_ids)
    sql += " GROUP BY 1, 2, 3"
    result: dict[int, dict[tuple[str, str], int]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for pool_id, status, source, n in cursor.fetchall():
            if n:
                result.setdefault(pool_id, {})[(status, source)] = int(n)
    return result


def pair_counters_compact() -> int:
    """Fold the appended counter rows into shard 0 and drop zero rows; returns rows removed."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, 0)", [COMPACT_LOCK_CLASS])
            cursor.execute(COMPACT_SQL)
            row = cursor.fetchone()
            cursor.execute(f"DELETE FROM {COUNTER_TABLE} WHERE shard = 0 AND n = 0")  # noqa: S608
            zero = cursor.rowcount
    return int(row[0]) + zero if row else zero
