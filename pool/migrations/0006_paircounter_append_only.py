"""Pair counters without in-place updates on the hot path (issue 21, "Held snapshot, whole stack").

Migration 0004's triggers upserted each statement's delta into the writing connection's row: two
in-place updates per reservation. Behind a long-held snapshot none of those rows' old versions can be
pruned, so every later upsert walked a growing version chain (reservations fell to 0.38x in 80 s on
5M pairs; flat with the triggers off). Now each statement *appends* its deltas as new rows keyed by a
sequence number (``shard``), which nothing ever updates; ``pool/counters.py`` folds them into shard 0
(the monitoring tasks, every minute) and reads sum both. ``shard`` becomes a bigint for the sequence.
"""

from django.db import migrations, models


def counter_functions(*, statement_no: str, shard: str, tail: str) -> str:
    """The three trigger functions, each adding its statement's net change per (pool, status, source)
    under ``shard``. ``statement_no``: a DECLARE line (or ""); ``tail``: what ends the INSERT."""
    delta = {
        "insert": "count(*) FROM pool_pairs_new GROUP BY 1, 2, 3",
        "update": """sum(d) FROM (
        SELECT pool_id, status, source, -1 AS d FROM pool_pairs_old
        UNION ALL
        SELECT pool_id, status, source, 1 AS d FROM pool_pairs_new
    ) delta
    GROUP BY 1, 2, 3 HAVING sum(d) <> 0""",
        "delete": "-count(*) FROM pool_pairs_old GROUP BY 1, 2, 3",
    }
    return "".join(f"""
CREATE OR REPLACE FUNCTION pool_paircounter_{operation}() RETURNS trigger LANGUAGE plpgsql AS $$
{statement_no}BEGIN
    INSERT INTO pool_paircounter (pool_id, status, source, shard, n)
    SELECT pool_id, status, source, {shard}, {change}{tail};
    RETURN NULL;
END $$;
""" for operation, change in delta.items())


# Each statement appends new rows under its own number: nothing is ever updated in place.
APPEND = "CREATE SEQUENCE IF NOT EXISTS pool_paircounter_statement_seq START 1 CACHE 100;\n" + counter_functions(
    statement_no="DECLARE statement_no bigint := nextval('pool_paircounter_statement_seq');\n",
    shard="statement_no", tail="")
# Back to 0004's functions: each connection upserts its own row (keys in sorted order). Rows appended
# meanwhile keep their own shard numbers, which the old functions and the fold read as they are.
REVERSE = counter_functions(statement_no="", shard="pg_backend_pid()", tail="""
    ORDER BY 1, 2, 3
    ON CONFLICT (pool_id, status, source, shard) DO UPDATE SET n = pool_paircounter.n + EXCLUDED.n""") + \
    "DROP SEQUENCE IF EXISTS pool_paircounter_statement_seq;\n"


class Migration(migrations.Migration):

    dependencies = [
        ('pool', '0005_pair_consumer_reserved_idx'),
    ]

    operations = [
        migrations.AlterField(
            model_name='paircounter',
            name='shard',
            field=models.BigIntegerField(help_text="The writing statement's number (a sequence); 0: folded."),
        ),
        migrations.RunSQL(APPEND, REVERSE),
    ]
