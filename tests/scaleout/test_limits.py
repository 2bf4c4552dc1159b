"""Shared limits (keys/limits.py): GCRA semantics on every backend, atomic under concurrency,
one clock for every process; the Redis backend degrades to per-process limits while Redis is down."""
from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from keys.limits import LocalLimiter, PostgresLimiter, RedisLimiter, gcra_parameters
from keys.shared_limits import LeasedLimiter, SharedLimiter, lease_size_limit
from tests.fixtures.concurrency import run_threads


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
        barrier.wait()
        passed.append(sum(limiter.take("key", rate=40, per=60.0) == 0.0 for _ in range(10)))

    run_threads(worker, count=16)
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
    assert isinstance(shared.backend(), LeasedLimiter) and isinstance(shared.backend().inner, PostgresLimiter)
    settings.SHARED_LIMITS_BACKEND = "nonsense"
    with pytest.raises(ValueError):
        shared.backend()


# --- take_many and leases --------------------------------------------------------------------------
def test_take_many_grants_up_to_the_burst_then_refuses_with_the_wait(limiter):
    assert limiter.take_many("m", rate=10, per=1.0, want=4) == (4, 0.0)
    assert limiter.take_many("m", rate=10, per=1.0, want=50) == (6, 0.0)  # the rest of the burst of 10
    granted, wait = limiter.take_many("m", rate=10, per=1.0, want=5)
    assert granted == 0 and 0.0 < wait <= 0.1 + 0.05
    assert limiter.take("m", rate=10, per=1.0) > 0.0  # the one-at-a-time path agrees


def test_lease_sizes_keep_low_rate_keys_exact():
    assert lease_size_limit(rate=5, per=1.0) == 1
    assert lease_size_limit(rate=20, per=1.0) == 1
    assert lease_size_limit(rate=40, per=1.0) == 2
    assert lease_size_limit(rate=1000, per=1.0) == 50
    assert lease_size_limit(rate=100_000, per=1.0) == 50
    assert lease_size_limit(rate=60, per=60.0) == 1  # the failed-authentication limit: exact


def _pg_round_trips(queries) -> int:
    return sum("core_ratelimit" in q["sql"] and "DELETE" not in q["sql"] for q in queries)


def test_a_high_rate_key_pays_one_round_trip_per_lease(transactional_db):
    limiter = LeasedLimiter(PostgresLimiter("lease"))
    n = 500
    with CaptureQueriesContext(connection) as ctx:
        allowed = sum(limiter.take("hot", rate=1000, per=1.0) == 0.0 for _ in range(n))
    assert allowed == n
    # Leases of 1, 2, 4, ... 32, then 50 each: 500 requests in about 16 round trips, not 500.
    assert _pg_round_trips(ctx.captured_queries) <= n / 50 + 8, len(ctx.captured_queries)


def test_threads_of_one_process_share_a_lease_fetch_instead_of_each_making_one():
    """Sixteen threads take a hot key at once while every fetch takes 5 ms: the threads that find the
    lease used up wait for the one fetch in flight (single flight) instead of each paying a round
    trip of their own."""
    limiter = LeasedLimiter(LocalLimiter("flight"))
    trips = [0]
    original = limiter.inner.take_many

    def slow_take_many(*args, **kwargs):
        trips[0] += 1
        time.sleep(0.005)  # a store round trip
        return original(*args, **kwargs)

    limiter.inner.take_many = slow_take_many
    threads, per_thread = 16, 50
    barrier = threading.Barrier(threads)
    allowed: list[int] = []

    def worker() -> None:
        barrier.wait()
        allowed.append(sum(limiter.take("hot", rate=100_000, per=1.0) == 0.0 for _ in range(per_thread)))

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert sum(allowed) == threads * per_thread
    # Leases of 1, 2, 4, ... 32, then 50: 800 decisions in 21 fetches when they are shared (a few
    # more if a lease expires on a slow machine); every thread fetching for itself made 37 here.
    assert trips[0] <= 27, trips[0]


def test_a_failed_lease_fetch_is_raised_and_releases_the_single_flight():
    """The store raising during a fetch reaches the caller, and the next decision makes a fetch of its
    own instead of finding one still "in flight"."""
    limiter = LeasedLimiter(LocalLimiter("failing"))
    original = limiter.inner.take_many
    trips = [0]

    def failing_once(*args, **kwargs):
        trips[0] += 1
        if trips[0] == 1:
            raise ConnectionError("store gone")
        return original(*args, **kwargs)

    limiter.inner.take_many = failing_once
    with pytest.raises(ConnectionError):
        limiter.take("hot", rate=1000, per=1.0)
    assert limiter._leases[("hot", 1000, 1.0)].fetching is False
    assert limiter.take("hot", rate=1000, per=1.0) == 0.0
    assert trips[0] == 2


def test_a_low_rate_key_pays_a_round_trip_per_decision(transactional_db):
    limiter = LeasedLimiter(PostgresLimiter("exact"))
    with CaptureQueriesContext(connection) as ctx:
        results = [limiter.take("cold", rate=5, per=1.0) == 0.0 for _ in range(7)]
    assert results == [True] * 5 + [False] * 2
    assert _pg_round_trips(ctx.captured_queries) == 7


def test_a_refusal_is_remembered_until_its_wait_has_passed(transactional_db):
    limiter = LeasedLimiter(PostgresLimiter("refused"))
    assert limiter.inner.take_many("k", rate=100, per=1.0, want=100) == (100, 0.0)  # another process: the burst
    refused_at = time.monotonic()  # before: the limiter remembers the refusal from a later instant
    wait = limiter.take("k", rate=100, per=1.0)
    assert 0.0 < wait <= 0.01 + 0.005
    with CaptureQueriesContext(connection) as ctx:
        again = limiter.take("k", rate=100, per=1.0)
    if time.monotonic() < refused_at + wait:  # still within the wait the store named (10 ms)
        assert again > 0.0
        assert _pg_round_trips(ctx.captured_queries) == 0  # known without asking


@pytest.mark.parametrize("backend", ["postgres", "redis"])
def test_two_leasing_processes_never_get_more_than_the_limit_together(backend, request, transactional_db):
    """Two LeasedLimiters (two processes), two threads each on their own connection, hammer one key
    of 200/s for 0.6 s: together never more than the burst plus rate x elapsed, and the leases kept
    the round trips far below the decisions."""
    if backend == "redis":
        request.getfixturevalue("redis_url")
    rate = 200.0
    inners = [PostgresLimiter("two") if backend == "postgres" else RedisLimiter("two") for _ in range(2)]
    processes = [LeasedLimiter(inner) for inner in inners]
    trips = [0]
    lock = threading.Lock()
    for inner in inners:
        original = inner.take_many

        def counted(*args, _original=original, **kwargs):
            with lock:
                trips[0] += 1
            return _original(*args, **kwargs)

        inner.take_many = counted
    allowed: list[int] = []
    decisions: list[int] = []
    times: list[float] = []
    barrier = threading.Barrier(4, action=lambda: times.append(time.monotonic()))

    def worker(process: LeasedLimiter) -> None:
        try:
            barrier.wait()
            ok = n = 0
            while time.monotonic() < times[0] + 0.6:
                ok += process.take("shared", rate=rate, per=1.0) == 0.0
                n += 1
            allowed.append(ok)
            decisions.append(n)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(processes[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - times[0]
    assert sum(allowed) <= rate + rate * elapsed, (sum(allowed), elapsed)
    assert sum(allowed) >= rate * 0.9  # at least the burst (less the tail of the leases) got through
    assert trips[0] < sum(decisions) / 5, (trips[0], sum(decisions))
    processes[0].reset()
