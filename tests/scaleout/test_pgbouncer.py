"""PgBouncer in transaction mode in front of PostgreSQL: what the claim, the limits and the key
generation rely on survives it; the session-state hazards it has are shown to be real and avoided."""
from __future__ import annotations

import threading

import psycopg
import pytest
from django.db import connection

from keys.keystate import key_generation_read
from keys.limits import PostgresLimiter
from pool.models import PairStatus, TokenPair
from pool.services import reservation_create
from tests.fixtures.concurrency import run_threads


def _server_pids(n: int) -> set[int]:
    pids = set()
    for _ in range(n):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pids.add(cursor.fetchone()[0])
    return pids


def test_the_fixture_really_pools_transactions(through_pgbouncer):
    """Sanity for everything below: through the fixture, Django's one client connection lands on
    whatever server session is free, and the settings match settings.py's DATABASE_PGBOUNCER=1."""
    assert connection.settings_dict["PORT"] == str(through_pgbouncer.port)
    assert connection.settings_dict["DISABLE_SERVER_SIDE_CURSORS"] is True
    assert "options" not in connection.settings_dict["OPTIONS"]
    with connection.cursor() as cursor:
        cursor.execute("SHOW port")
        assert cursor.fetchone()[0] != str(through_pgbouncer.port)  # answered by PostgreSQL behind it


def test_claims_through_pgbouncer_hand_out_each_pair_once(through_pgbouncer, make_pool, make_api_key):
    """12 threads, 4 server sessions: each thread claims far past psycopg's prepare threshold (5
    executions) on its own client connection; every pair goes out once, none is lost."""
    pool = make_pool(pairs=360, refill_enabled=False)
    key, _ = make_api_key(scopes=["reserve"])
    claimed: list[str] = []
    barrier = threading.Barrier(12)

    def worker() -> None:
        barrier.wait()
        for _ in range(30):
            pair, _created = reservation_create(pool=pool, api_key=key, idempotency_key=None, owner_ref=None)
            claimed.append(pair.internal_token)

    run_threads(worker, count=12)  # raises what a thread raised
    assert len(claimed) == len(set(claimed)) == 360
    assert TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).count() == 0


def test_limits_and_key_generation_through_pgbouncer(through_pgbouncer):
    limiter = PostgresLimiter("bouncer")
    waits = [limiter.take("k", rate=10, per=60.0) for _ in range(12)]
    assert waits.count(0.0) == 10
    assert key_generation_read() >= 0
    assert len(_server_pids(20)) >= 1


def test_server_side_cursors_are_off_so_iterator_works_across_pooled_sessions(through_pgbouncer, make_pool):
    pool = make_pool(pairs=250, refill_enabled=False)
    tokens = [p.internal_token for p in TokenPair.objects.filter(pool=pool).iterator(chunk_size=20)]
    assert len(tokens) == 250


def test_psycopg_prepared_statements_would_break_behind_pgbouncer_1_18(pgbouncer, transactional_db):
    """The hazard that settings.py's prepare_threshold=None avoids, shown for real: two clients that
    let psycopg prepare server-side share a pooled session and collide on the statement name."""
    url = pgbouncer.url(connection.settings_dict["NAME"])
    a = psycopg.connect(url, autocommit=True, prepare_threshold=0)
    b = psycopg.connect(url, autocommit=True, prepare_threshold=0)
    try:
        with pytest.raises(psycopg.errors.DatabaseError) as excinfo:
            for i in range(10):  # sequential: PgBouncer hands the same idle server session to each
                a.execute("SELECT %s::int + 1", (i,)).fetchone()
                b.execute("SELECT %s::int + 2", (i,)).fetchone()
        assert "prepared statement" in str(excinfo.value)
    finally:
        a.close()
        b.close()
    # The same two clients with Django's setting (no server-side prepares) never collide.
    a = psycopg.connect(url, autocommit=True, prepare_threshold=None)
    b = psycopg.connect(url, autocommit=True, prepare_threshold=None)
    try:
        for i in range(10):
            assert a.execute("SELECT %s::int + 1", (i,)).fetchone() == (i + 1,)
            assert b.execute("SELECT %s::int + 2", (i,)).fetchone() == (i + 2,)
    finally:
        a.close()
        b.close()


def test_the_refill_lock_is_single_flight_through_pgbouncer(through_pgbouncer, make_pool):
    """The refill's advisory lock through PgBouncer: held for the whole run by its own transaction,
    refused to every other session meanwhile (even after the holder ran many statements while the
    pool of server sessions was shared), free again the moment the run ends."""
    from refill.services.lock import pool_lock, pool_refill_locked

    pool = make_pool(refill_enabled=False)
    with pool_lock(pool_id=pool.pk, hold_seconds=60) as held:
        assert held is not None
        for _ in range(10):  # other clients keep using the pooled server sessions meanwhile
            assert _server_pids(3)
            with pool_lock(pool_id=pool.pk, hold_seconds=60) as other:
                assert other is None
            assert held.alive()
        assert pool_refill_locked(pool_id=pool.pk)
    assert not pool_refill_locked(pool_id=pool.pk)
    with pool_lock(pool_id=pool.pk, hold_seconds=60) as again:
        assert again is not None


def test_a_killed_lock_holder_behind_pgbouncer_frees_the_lock(through_pgbouncer, make_pool, tmp_path):
    """SIGKILL of the process holding the refill lock through PgBouncer: PgBouncer drops the server
    session that was inside the holder's transaction, and with it the lock."""
    import os
    import signal
    import subprocess
    import sys

    from refill.services.lock import REFILL_LOCK_CLASS, pool_refill_locked
    from tests.scaleout.stack import wait_for

    pool = make_pool(refill_enabled=False)
    url = through_pgbouncer.url(connection.settings_dict["NAME"])
    script = (f"import psycopg, time\nc = psycopg.connect({url!r}, prepare_threshold=None)\n"
              f"assert c.execute('SELECT pg_try_advisory_xact_lock({REFILL_LOCK_CLASS}, {pool.pk})').fetchone()[0]\n"
              "print('locked', flush=True)\ntime.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert pool_refill_locked(pool_id=pool.pk)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        if holder.poll() is None:
            holder.kill()
    wait_for(lambda: not pool_refill_locked(pool_id=pool.pk), timeout=10, message="the lock to go with the session")
