"""Shared limits (core/api/limits.py): GCRA semantics on every backend, atomic under concurrency,
one clock for every process; the Redis backend degrades to per-process limits while Redis is down."""
from __future__ import annotations

import threading

import pytest
from django.db import connection, connections

from core.api.limits import LocalLimiter, PostgresLimiter, RedisLimiter, SharedLimiter, gcra_parameters


def test_gcra_parameters_allow_a_burst_of_rate_then_one_per_interval():
    assert gcra_parameters(rate=10, per=1.0) == pytest.approx((0.1, 0.9))
    assert gcra_parameters(rate=60, per=60.0) == pytest.approx((1.0, 59.0))
    assert gcra_parameters(rate=0.5, per=1.0) == pytest.approx((2.0, 0.0))  # burst never below one
    with pytest.raises(ValueError):
        gcra_parameters(rate=0, per=1.0)


@pytest.fixture(params=["local", "postgres", "redis"])
def limiter(request):
    if request.param == "local":
        yield LocalLimiter("t")
        return
    request.getfixturevalue("transactional_db")
    if request.param == "postgres":
        yield PostgresLimiter("t")
        return
    request.getfixturevalue("redis_url")
    limiter = RedisLimiter("t")
    yield limiter
    limiter.reset()


def test_a_burst_of_rate_passes_then_the_next_waits_about_one_interval(limiter):
    waits = [limiter.take("k", rate=5, per=1.0) for _ in range(6)]
    assert waits[:5] == [0.0] * 5
    assert 0.0 < waits[5] <= 0.2 + 0.05  # T = 0.2 s, less the time the five took


def test_peek_counts_nothing(limiter):
    for _ in range(3):
        assert limiter.take("k", rate=1, per=60.0, peek=True) == 0.0
    assert limiter.take("k", rate=1, per=60.0) == 0.0
    assert limiter.take("k", rate=1, per=60.0, peek=True) > 50.0
    assert limiter.take("k", rate=1, per=60.0) > 50.0


def test_names_and_namespaces_are_independent(limiter):
    assert limiter.take("a", rate=1, per=60.0) == 0.0
    assert limiter.take("a", rate=1, per=60.0) > 0.0
    assert limiter.take("b", rate=1, per=60.0) == 0.0


def test_reset_forgets(limiter):
    assert limiter.take("a", rate=1, per=60.0) == 0.0
    limiter.reset()
    assert limiter.take("a", rate=1, per=60.0) == 0.0


@pytest.mark.parametrize("backend", ["postgres", "redis"])
def test_concurrent_takers_on_separate_connections_get_exactly_the_burst(backend, request, transactional_db):
    """16 threads (each its own database/Redis connection, as separate processes would be) race for
    a budget of 40 over a minute: exactly 40 pass, never 41."""
    if backend == "redis":
        request.getfixturevalue("redis_url")
    limiter = PostgresLimiter("c") if backend == "postgres" else RedisLimiter("c")
    passed = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        try:
            barrier.wait()
            passed.append(sum(limiter.take("key", rate=40, per=60.0) == 0.0 for _ in range(10)))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(passed) == 40


def test_postgres_decisions_use_the_database_clock_and_one_row_per_name(transactional_db):
    limiter = PostgresLimiter("row")
    for _ in range(5):
        limiter.take("k", rate=100, per=1.0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), bool_and(allowed), max(tat) > extract(epoch FROM clock_timestamp()) "
                       "FROM core_ratelimit WHERE bucket = 'row:k'")
        assert cursor.fetchone() == (1, True, True)
        cursor.execute("SELECT relpersistence FROM pg_class WHERE relname = 'core_ratelimit'")
        assert cursor.fetchone() == ("u",)  # UNLOGGED: no WAL flush per request


def test_postgres_prunes_rows_whose_time_has_passed(transactional_db):
    limiter = PostgresLimiter("prune")
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO core_ratelimit VALUES ('prune:old', 1.0, 1.0, true)")
    limiter.take("new", rate=1, per=1.0)  # the first take of a process prunes
    with connection.cursor() as cursor:
        cursor.execute("SELECT bucket FROM core_ratelimit WHERE bucket LIKE 'prune:%' ORDER BY 1")
        assert [r[0] for r in cursor.fetchall()] == ["prune:new"]


def test_redis_keys_carry_the_cache_prefix_and_expire(redis_url, redis_server):
    limiter = RedisLimiter("exp")
    limiter.take("k", rate=10, per=1.0)
    with redis_server.client() as client:
        keys = client.keys("*exp*")
        assert keys == [b"tokenpool-test:1:ratelimit:exp:k"]
        assert 0 < client.pttl(keys[0]) <= 1200


def test_redis_down_falls_back_to_per_process_limits(settings, caplog):
    port_nobody_listens_on = 9  # discard port: connection refused at once
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": f"redis://127.0.0.1:{port_nobody_listens_on}/0",
                                   "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2}}}
    limiter = RedisLimiter("down")
    assert [limiter.take("k", rate=2, per=60.0) == 0.0 for _ in range(3)] == [True, True, False]
    assert "rate_limit_store_unavailable" in caplog.text


def test_shared_limiter_follows_the_setting(settings, transactional_db):
    shared = SharedLimiter("s")
    settings.SHARED_LIMITS_BACKEND = "local"
    assert isinstance(shared.backend(), LocalLimiter)
    settings.SHARED_LIMITS_BACKEND = "postgres"
    assert isinstance(shared.backend(), PostgresLimiter)
    settings.SHARED_LIMITS_BACKEND = "nonsense"
    with pytest.raises(ValueError):
        shared.backend()
