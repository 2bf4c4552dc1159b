"""Per-pool pair counters (pool, status, source) kept by statement-level triggers on the pair table.

Each INSERT, UPDATE or DELETE statement on ``core_tokenpair`` (COPY included) adds its net change per
(pool, status, source) — read from the statement's transition tables — to the counter rows of the
writing connection (shard = ``pg_backend_pid()``): no two connections ever update the same counter
row, so reservations on different connections never queue behind each other, and the counts commit
(or roll back) with the pairs. Keys are upserted in sorted order. TRUNCATE empties the counters.

The migration counts the existing pairs once (one sequential scan, a one-time cost: 2.9 s on
10M rows in docs/benchmarks.md) while ``CREATE TRIGGER``'s lock keeps writers out, so the first counts are exact.
"""

import django.db.models.deletion
from django.db import migrations, models


UPSERT = """
    ON CONFLICT (pool_id, status, source, shard) DO UPDATE SET n = pool_paircounter.n + EXCLUDED.n;
"""
TRIGGERS = f"""
CREATE FUNCTION pool_paircounter_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pool_paircounter (pool_id, status, source, shard, n)
    SELECT pool_id, status, source, pg_backend_pid(), count(*) FROM pool_pairs_new
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    {UPSERT}
    RETURN NULL;
END $$;

CREATE FUNCTION pool_paircounter_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pool_paircounter (pool_id, status, source, shard, n)
    SELECT pool_id, status, source, pg_backend_pid(), sum(d) FROM (
        SELECT pool_id, status, source, -1 AS d FROM pool_pairs_old
        UNION ALL
        SELECT pool_id, status, source, 1 AS d FROM pool_pairs_new
    ) delta
    GROUP BY 1, 2, 3 HAVING sum(d) <> 0 ORDER BY 1, 2, 3
    {UPSERT}
    RETURN NULL;
END $$;

CREATE FUNCTION pool_paircounter_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pool_paircounter (pool_id, status, source, shard, n)
    SELECT pool_id, status, source, pg_backend_pid(), -count(*) FROM pool_pairs_old
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    {UPSERT}
    RETURN NULL;
END $$;

CREATE FUNCTION pool_paircounter_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM pool_paircounter;
    RETURN NULL;
END $$;

CREATE TRIGGER pool_paircounter_insert AFTER INSERT ON core_tokenpair
    REFERENCING NEW TABLE AS pool_pairs_new FOR EACH STATEMENT EXECUTE FUNCTION pool_paircounter_insert();
CREATE TRIGGER pool_paircounter_update AFTER UPDATE ON core_tokenpair
    REFERENCING OLD TABLE AS pool_pairs_old NEW TABLE AS pool_pairs_new
    FOR EACH STATEMENT EXECUTE FUNCTION pool_paircounter_update();
CREATE TRIGGER pool_paircounter_delete AFTER DELETE ON core_tokenpair
    REFERENCING OLD TABLE AS pool_pairs_old FOR EACH STATEMENT EXECUTE FUNCTION pool_paircounter_delete();
CREATE TRIGGER pool_paircounter_truncate AFTER TRUNCATE ON core_tokenpair
    FOR EACH STATEMENT EXECUTE FUNCTION pool_paircounter_truncate();
"""
REVERSE_TRIGGERS = """
DROP TRIGGER IF EXISTS pool_paircounter_insert ON core_tokenpair;
DROP TRIGGER IF EXISTS pool_paircounter_update ON core_tokenpair;
DROP TRIGGER IF EXISTS pool_paircounter_delete ON core_tokenpair;
DROP TRIGGER IF EXISTS pool_paircounter_truncate ON core_tokenpair;
DROP FUNCTION IF EXISTS pool_paircounter_insert();
DROP FUNCTION IF EXISTS pool_paircounter_update();
DROP FUNCTION IF EXISTS pool_paircounter_delete();
DROP FUNCTION IF EXISTS pool_paircounter_truncate();
"""
# Runs after CREATE TRIGGER in the same transaction: its SHARE ROW EXCLUSIVE lock on the pair table
# is held until commit, so no pair changes between this count and the triggers taking over.
POPULATE = """
INSERT INTO pool_paircounter (pool_id, status, source, shard, n)
SELECT pool_id, status, source, 0, count(*) FROM core_tokenpair GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
"""


class Migration(migrations.Migration):

    dependencies = [
        ('pool', '0003_auditrecord_consumer'),
    ]

    operations = [  # the model first, then the triggers and the one-time count (below)
        migrations.CreateModel(
            name='PairCounter',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('status', models.CharField(choices=[('AVAILABLE', 'Available'), ('RESERVED', 'Reserved'), ('USED', 'Used'), ('RETIRED', 'Retired')], max_length=16)),
                ('source', models.CharField(choices=[('pool', 'Pool'), ('direct', 'Direct')], max_length=8)),
                ('shard', models.IntegerField(help_text='pg_backend_pid() of the connection that wrote; 0: folded.')),
                ('n', models.BigIntegerField(default=0)),
                ('pool', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='pool.pool')),
            ],
            options={
                'db_table': 'pool_paircounter',
                'constraints': [models.UniqueConstraint(fields=('pool', 'status', 'source', 'shard'), name='paircounter_key')],
            },
        ),
        migrations.RunSQL(TRIGGERS, REVERSE_TRIGGERS),
        migrations.RunSQL(POPULATE, migrations.RunSQL.noop),
    ]
