"""A new key moves the shared key generation too (core 0011's trigger covered UPDATE, DELETE and
TRUNCATE): every process then reloads its known key prefixes (keys/prefixes.py) within
API_KEY_REVOCATION_CHECK_SECONDS, so a new key is told from a guess without a database lookup."""
from django.db import migrations

SQL = """
CREATE TRIGGER core_apikey_generation_bump_insert
    AFTER INSERT ON core_apikey
    FOR EACH STATEMENT EXECUTE FUNCTION core_apikey_generation_bump();
"""
REVERSE_SQL = "DROP TRIGGER IF EXISTS core_apikey_generation_bump_insert ON core_apikey;"


class Migration(migrations.Migration):

    dependencies = [("keys", "0004_apikey_consumer_not_null")]

    operations = [migrations.RunSQL(SQL, REVERSE_SQL)]
