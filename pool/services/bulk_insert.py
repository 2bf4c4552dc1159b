"""Fresh AVAILABLE pairs from the refill (and live pairs a lost idempotency race left unused)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from pool.models import Pool
from tokenpool_tome.client import TokenPair as TomePair


def pairs_insert_bulk(*, pool: Pool, pairs: Sequence[TomePair]) -> int:
    """Insert fresh AVAILABLE pairs; returns how many were new (pairs already stored are skipped).

    TOME never mints a token twice, so the usual batch is all new: COPY it straight into the table
    (inside a savepoint). Only if that hits a unique violation (a retried batch, a replayed TOME
    answer) is the batch inserted again through a staging table with ON CONFLICT DO NOTHING.
    Measured against the staged path and a multi-row INSERT in docs/benchmarks.md. The caller owns
    the transaction (one per TOME batch); without one, this runs in its own."""
    if not pairs:
        return 0
    created_at = timezone.now()
    try:
        with transaction.atomic(), connection.wrap_database_errors, connection.cursor() as cursor:
            with cursor.cursor.copy("COPY core_tokenpair (pool_id, internal_token, external_ref_id, status, "
                                    "source, created_at) FROM STDIN") as copy:
                for pair in pairs:
                    copy.write_row((pool.pk, pair.internal_token, pair.external_ref_id, "AVAILABLE", "pool",
                                    created_at))
        return len(pairs)
    except IntegrityError:
        pass  # the savepoint rolled the COPY back; skip the duplicates one by one below
    return pairs_insert_staged(pool=pool, pairs=pairs)


def pairs_insert_staged(*, pool: Pool, pairs: Sequence[TomePair]) -> int:
    """COPY into a transaction-local staging table, then `INSERT ... SELECT ... ON CONFLICT DO NOTHING`."""
    with transaction.atomic(), connection.wrap_database_errors, connection.cursor() as cursor:
        # ON COMMIT DROP: the staging table lives exactly as long as the batch's transaction.
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS core_tokenpair_stage "
                       "(internal_token text NOT NULL, external_ref_id text NOT NULL) ON COMMIT DROP")
        cursor.execute("TRUNCATE core_tokenpair_stage")
        with cursor.cursor.copy("COPY core_tokenpair_stage (internal_token, external_ref_id) FROM STDIN") as copy:
            for pair in pairs:
                copy.write_row((pair.internal_token, pair.external_ref_id))
        cursor.execute(
            "INSERT INTO core_tokenpair (pool_id, internal_token, external_ref_id, status, source, created_at) "
            "SELECT %s, internal_token, external_ref_id, 'AVAILABLE', 'pool', now() FROM core_tokenpair_stage "
            "ON CONFLICT DO NOTHING",
            [pool.pk],
        )
        return cast(int, cursor.rowcount)
