"""Shared state between processes when no Redis is configured (core/api/limits.py, core/api/keystate.py).

- ``core_ratelimit``: one GCRA row per limited name. UNLOGGED (no WAL, no commit flush; emptied by a
  crash, which only forgives the limits for a moment); fillfactor 50 so the constant updates of a
  hot row stay HOT updates on the same page.
- ``core_apikey_generation``: one row, incremented by a statement trigger on every change to
  ``core_apikey`` so every process can drop its cache of verified keys within a second.
Raw SQL, not models: neither is something the ORM should read or write, and a test flush must not
empty the generation row.
"""
from django.db import migrations

FORWARD = """
CREATE UNLOGGED TABLE core_ratelimit (
    bucket     text PRIMARY KEY,
    tat        double precision NOT NULL,
    checked_at double precision NOT NULL,
    allowed    boolean NOT NULL
) WITH (fillfactor = 50);

CREATE TABLE core_apikey_generation (
    id         smallint PRIMARY KEY CHECK (id = 1),
    generation bigint NOT NULL
);
INSERT INTO core_apikey_generation (id, generation) VALUES (1, 0);

CREATE FUNCTION core_apikey_generation_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE core_apikey_generation SET generation = generation + 1 WHERE id = 1;
    RETURN NULL;
END $$;

CREATE TRIGGER core_apikey_generation_bump
    AFTER UPDATE OR DELETE OR TRUNCATE ON core_apikey
    FOR EACH STATEMENT EXECUTE FUNCTION core_apikey_generation_bump();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS core_apikey_generation_bump ON core_apikey;
DROP FUNCTION IF EXISTS core_apikey_generation_bump();
DROP TABLE IF EXISTS core_apikey_generation;
DROP TABLE IF EXISTS core_ratelimit;
"""


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0010_audit_digest_is_keyed'),
    ]

    operations = [
        migrations.RunSQL(FORWARD, BACKWARD),
    ]
