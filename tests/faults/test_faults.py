"""The fault suite (issue 10): one whole `make run` stack as real processes, hit with faults while
clients keep working, each test ending with the invariants — no pair handed out twice, none lost
(every pair in exactly one consistent state, every pair a client received stored as theirs),
every answered lookup audited.

The tests share one stack (starting one costs ~15-30 s on a loaded 2-core machine) and run in
file order: TOME faults, the qcluster killed mid-refill, PostgreSQL killed and restarted under
load, then two SIGTERMs to the runner's process group while the load still runs. Figures are
printed (run with ``-s``) and recorded in docs/reliability.md.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.load import Load, check_invariants, connect
from tests.fixtures.processes import wait_for
from tests.runner.stack import Stack, start_cluster, stop_cluster

pytestmark = pytest.mark.slow

STACK_ENV = {
    "WEB_WORKERS": "2",
    "Q_WORKERS": "2",
    "TOME_READ_TIMEOUT": "1",           # a slow TOME times out quickly
    "TOME_BREAKER_RESET_SECONDS": "2",  # and is tried again soon after it recovers
    "REFILL_COOLDOWN_SECONDS": "2",
    "REFILL_BACKOFF_MAX_SECONDS": "1",
    # A killed refill task is re-delivered after Q_RETRY (issue 10 item 11b); shortened so the test
    # sees the replay, keeping the production relation budget < timeout < retry.
    "REFILL_TIME_BUDGET_SECONDS": "8",
    "Q_TIMEOUT": "10",
    "Q_RETRY": "12",
    # Web workers cache pool rows this long; short, so a watermark the test writes into the database
    # reaches them within a fraction of a second instead of the default 5 s.
    "POOL_CACHE_SECONDS": "0.5",
}


class Tome:
    """The stack's emulator, through its admin endpoints (fault injection)."""

    def __init__(self, port: int) -> None:
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0,
                                   headers={"Authorization": "Bearer dev-tome-admin"})

    def faults(self, **faults: object) -> None:
        self.client.put("/v1/admin/faults", json=faults).raise_for_status()

    def reset(self) -> None:
        self.faults(latency_ms=0, error_rate=0.0, timeout_rate=0.0, outage=False)


@pytest.fixture(scope="module")
def stack(stack_home: Path) -> Iterator[Stack]:
    stop_cluster(stack_home)
    stack = Stack(stack_home, **STACK_ENV).start()
    try:
        stack.wait_up()
        yield stack
    finally:
        stack.kill()


@pytest.fixture(scope="module")
def tome(stack: Stack) -> Iterator[Tome]:
    tome = Tome(stack.tome_port)
    yield tome
    tome.client.close()


@pytest.fixture
def db(stack: Stack):
    with connect(stack.home / "pgdata") as conn:
        yield conn


def readyz(stack: Stack) -> tuple[int, dict]:
    r = stack.get("/readyz")
    return r.status_code, r.json()


def available(db) -> int:
    return db.execute("SELECT count(*) FROM core_tokenpair t JOIN core_pool p ON p.id = t.pool_id "
                      "WHERE p.name = 'default' AND t.status = 'AVAILABLE'").fetchone()[0]


def test_tome_slow_failing_down_then_recovering(stack, tome, db):
    """Reservations, confirms and lookups of known pairs never need TOME: they all succeed while
    TOME is slow, failing or down; a refill started meanwhile fails and the next one succeeds."""
    tome.reset()
    # Refill as soon as a few pairs go: the low watermark just under what the pool holds.
    have = available(db)
    db.execute("UPDATE core_pool SET target_size = %s, low_watermark = %s, critical_watermark = 1, "
               "batch_size = 200 WHERE name = 'default'", (have + 400, have - 20))
    runs_before = db.execute("SELECT coalesce(max(id), 0) FROM core_refillrun").fetchone()[0]
    load = Load(stack.base_url, stack.api_key(), threads=4, phase="tome ok").start()
    try:
        wait_for(lambda: load.successes("tome ok") >= 20, timeout=60, message="traffic")
        for phase, faults in [("tome slow", {"latency_ms": 3000}),
                              ("tome 5xx", {"error_rate": 1.0, "error_status": 503}),
                              ("tome down", {"outage": True})]:
            tome.reset()
            tome.faults(**faults)
            load.phase = phase
            wait_for(lambda p=phase: load.successes(p) >= 20, timeout=60, message=f"traffic while {phase}")
        status, body = readyz(stack)
        assert status == 503 and body["status"] == "degraded" and body["checks"]["tome"] == "down"
        # A lookup the database cannot answer needs TOME: the contract's 503, with Retry-After.
        miss = httpx.post(f"{stack.base_url}/api/v1/lookup", json={"internal_token": "9" * 16}, timeout=30,
                          headers={"Authorization": f"Api-Key {stack.api_key()}"})
        assert miss.status_code == 503 and miss.json()["code"] == "upstream_unavailable"
        assert "Retry-After" in miss.headers
        failed = wait_for(lambda: db.execute(
            "SELECT count(*) FROM core_refillrun WHERE id > %s AND outcome = 'failed'", (runs_before,)).fetchone()[0],
            timeout=90, message="a refill to fail while TOME is down")

        tome.reset()
        load.phase = "tome recovered"
        wait_for(lambda: readyz(stack)[0] == 200, timeout=60, message="/readyz back to 200")
        recovered = wait_for(lambda: db.execute(
            "SELECT count(*) FROM core_refillrun WHERE id > %s AND outcome = 'succeeded'",
            (runs_before,)).fetchone()[0], timeout=90, message="a refill to succeed after TOME recovered")
        wait_for(lambda: load.successes("tome recovered") >= 20, timeout=60, message="traffic after recovery")
    finally:
        load.stop()
        tome.reset()
    assert not [a for a in load.answers if isinstance(a.status, str) or a.status >= 400], load.summary()
    figures = check_invariants(db, load)
    print(f"\nTOME faults: {load.summary()}\n"
          f"  refill runs failed {failed}, succeeded after recovery {recovered}; {figures}")


def test_qcluster_killed_mid_refill_loses_and_doubles_no_batch(stack, tome, db):
    """SIGKILL to the whole qcluster while it refills: the runner restarts it, django-q2 re-delivers
    the killed task after Q_RETRY, and the replay tops the pool up to exactly its target."""
    tome.reset()
    have = available(db)
    target = have + 6000
    db.execute("UPDATE core_pool SET target_size = %s, low_watermark = %s, critical_watermark = 1, "
               "batch_size = 500 WHERE name = 'default'", (target, target - 10))
    last_run = db.execute("SELECT coalesce(max(id), 0) FROM core_refillrun").fetchone()[0]
    first_pair = db.execute("SELECT coalesce(max(id), 0) FROM core_tokenpair").fetchone()[0]
    tome.faults(latency_ms=300)  # ~0.7 s per batch of 500: a wide window to land the kill in
    [since] = db.execute("SELECT clock_timestamp()").fetchone()
    headers = {"Authorization": f"Api-Key {stack.api_key()}"}

    def reservation_queued_a_refill() -> bool:
        # A web worker still holding the old pool row (POOL_CACHE_SECONDS) sees no low watermark and
        # queues nothing; reserve again until one has seen the new watermark and taken the refill lease
        # (or a refill run has started). The refill tops up to the target whatever the reservations took.
        reserved = httpx.post(f"{stack.base_url}/api/v1/reservations", json={}, headers=headers, timeout=30)
        assert reserved.status_code == 201, reserved.text
        return bool(db.execute(
            "SELECT 1 FROM core_refilllease l JOIN core_pool p ON p.id = l.pool_id "
            "WHERE p.name = 'default' AND l.acquired_at >= %s "
            "UNION ALL SELECT 1 FROM core_refillrun WHERE id > %s", (since, last_run)).fetchone())

    wait_for(reservation_queued_a_refill, timeout=30, interval=0.5,
             message="a reservation to see the new watermark and queue a refill")
    run_id = wait_for(lambda: (db.execute(
        "SELECT id FROM core_refillrun WHERE id > %s AND outcome = 'running' AND inserted >= 1000",
        (last_run,)).fetchone() or [None])[0], timeout=90, message="the qcluster's refill to commit two batches")
    [qcluster] = stack.children("qcluster")
    os.killpg(qcluster, signal.SIGKILL)
    killed_at = time.monotonic()
    tome.reset()
    wait_for(lambda: [p for p in stack.children("qcluster") if p != qcluster], timeout=60,
             message="the runner to restart the qcluster")
    assert stack.get("/healthz").status_code == 200

    def done() -> bool:
        return available(db) == target and not db.execute(
            "SELECT 1 FROM core_refillrun WHERE id > %s AND outcome = 'running'", (last_run,)).fetchone()

    wait_for(done, timeout=120, interval=0.5, message="the pool back at its target")
    recovered_after = time.monotonic() - killed_at
    runs = db.execute("SELECT id, outcome, requested, inserted, error FROM core_refillrun WHERE id > %s ORDER BY id",
                      (last_run,)).fetchall()
    killed = next(r for r in runs if r[0] == run_id)
    assert killed[1] == "failed" and "Abandoned" in killed[4]  # the next run said what happened
    created = db.execute("SELECT count(*) FROM core_tokenpair WHERE id > %s AND source = 'pool'",
                         (first_pair,)).fetchone()[0]
    assert created == sum(r[3] for r in runs)  # every stored pair counted by exactly one run
    assert killed[3] % 500 == 0 and killed[3] >= 1000  # whole batches only; the one in flight is gone
    assert available(db) == target  # nothing doubled: the replay filled only what was missing
    figures = check_invariants(db)
    print(f"\nqcluster killed mid-refill: runs {[(r[1], r[2], r[3]) for r in runs]}; "
          f"pool back at target {recovered_after:.1f} s after the kill; {figures}")


def test_postgres_killed_and_restarted_under_load_then_sigterm_twice(stack, db):
    """PostgreSQL SIGKILLed (the whole server) under load: 503 database_unavailable with
    Retry-After while it is down, never a 500; service resumes by itself once it is back. Then two
    SIGTERMs to the runner's group while clients still send: nothing survives, nothing is lost."""
    db.close()
    pgdata = stack.home / "pgdata"
    [web] = stack.children("gunicorn")
    load = Load(stack.base_url, stack.api_key(), threads=6, phase="before").start()
    try:
        wait_for(lambda: load.successes("before") >= 30, timeout=60, message="traffic")
        postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
        load.phase = "postgres down"
        os.killpg(postmaster, signal.SIGKILL)  # the postmaster and every backend, no shutdown at all
        killed_at = time.monotonic()
        wait_for(lambda: len(load.in_phase("postgres down")) >= 60, timeout=60, message="answers while down")
        load.phase = "postgres restarted"
        outage_began = time.monotonic() - killed_at
        restart_began = time.monotonic()
        start_cluster(stack.env)  # crash recovery, then up
        ready = time.monotonic()
        wait_for(lambda: load.successes("postgres restarted") >= 1, timeout=60, message="the first success")
        first_success = time.monotonic() - ready
        restart_took = ready - restart_began
        wait_for(lambda: load.successes("postgres restarted") >= 30, timeout=60, message="traffic after restart")
        assert stack.children("gunicorn") == [web]  # recovered without a restart

        load.phase = "sigterm x2"
        stack.signal_group_twice(gap=0.005)
        assert stack.wait_exit() == 0
    finally:
        load.stop()
        if os.environ.get("FAULTS_KEEP_LOG"):
            Path(os.environ["FAULTS_KEEP_LOG"]).write_text(stack.output())
    stack.assert_nothing_left()

    down = load.in_phase("postgres down")
    failures = [a for a in load.answers
                if a.phase != "sigterm x2" and not (isinstance(a.status, int) and a.status < 400)]
    assert failures, "the outage was not observed"
    assert {(a.status, a.code, a.retry_after) for a in failures} == {(503, "database_unavailable", True)}, \
        load.summary()
    assert any(a.status == 503 for a in down)
    # While stopping, a client sees answers or a closed connection, never a 500.
    assert not [a for a in load.in_phase("sigterm x2") if a.status == 500]

    start_cluster(stack.env)
    try:
        with connect(pgdata) as conn:
            figures = check_invariants(conn, load)
    finally:
        stop_cluster(stack.home)
    print(f"\nPostgreSQL killed: {load.summary()}\n  down {outage_began:.1f} s before the restart; the restart "
          f"(crash recovery) took {restart_took:.1f} s; first success {first_success:.2f} s after it; {figures}")
