"""Real Redis and PgBouncer for the scale-out tests (fixtures in tests/fixtures/{redis,pgbouncer}.py)."""
from tests.fixtures.pgbouncer import pgbouncer, through_pgbouncer  # noqa: F401
from tests.fixtures.redis import redis_server, redis_url  # noqa: F401
