"""Real Redis and PgBouncer come from tests/fixtures/{redis,pgbouncer}.py (registered in tests/conftest.py)."""
