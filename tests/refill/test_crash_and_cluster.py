"""Real separate processes: a refill killed with SIGKILL mid-run, and a qcluster refilling a drained pool."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pool.models import PairStatus, TokenPair
from refill.models import RefillOutcome, RefillRun, RefillTrigger
from refill.services import pool_refill_locked, refill_run
from tests.fixtures.processes import ROOT, wait_for

from .test_refill_run import assert_whole_pairs

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        # SIGTERM to the leader only: qcluster's sentinel stops its own workers in order. Signalling
        # the whole group kills the sentinel under the main process, which then waits forever.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def test_sigkill_mid_refill_leaves_only_whole_committed_batches_and_the_next_run_completes(
        refill_ready, make_pool, child_env, tmp_path):
    pool = make_pool("crash-pool", target_size=3000, low_watermark=100, batch_size=100)
    refill_ready.set_faults(latency_ms=120)  # ~0.25 s per batch: a wide window to land the kill in
    with open(tmp_path / "refill.log", "wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "refill_pool", "--pool", pool.name, "--trigger", "manual"],
            cwd=ROOT, env=child_env(refill_ready), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        run = wait_for(lambda: RefillRun.objects.filter(pool=pool, inserted__gte=300).first(), timeout=60,
                       message="the child to commit three batches")
        time.sleep(0.13)  # land somewhere inside a batch (TOME call or insert), not on a boundary
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        stop(proc)
        refill_ready.reset_faults()

    run.refresh_from_db()
    assert run.outcome == RefillOutcome.RUNNING and run.finished_at is None  # it never got to say
    stored = TokenPair.objects.filter(pool=pool).count()
    assert stored == run.inserted  # counters commit with their batch: the row is the truth
    assert 300 <= stored < 3000 and stored % 100 == 0  # whole batches only, the one in flight is gone
    assert_whole_pairs(pool)  # every row has both tokens, well-formed, unique, AVAILABLE
    assert TokenPair.objects.exclude(pool=pool).filter(source="pool", status=PairStatus.AVAILABLE,
                                                       created_at__gte=run.started_at).count() == 0
    # The server noticed the dead session: its advisory lock is gone with it.
    wait_for(lambda: not pool_refill_locked(pool_id=pool.pk), timeout=10, message="the lock to be released")

    nxt = refill_run(pool=pool, trigger=RefillTrigger.SCHEDULED)
    run.refresh_from_db()
    assert run.outcome == RefillOutcome.FAILED and "Abandoned" in run.error
    assert nxt.outcome == RefillOutcome.SUCCEEDED, nxt.error
    assert nxt.requested == 3000 - stored
    assert TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).count() == 3000
    assert_whole_pairs(pool)


def test_a_frozen_refill_worker_stops_holding_the_pool_after_the_lock_idle_timeout(
        refill_ready, make_pool, child_env, tmp_path):
    """Issue 20: a refill worker stopped with SIGSTOP (alive to the kernel, its socket open) held the
    pool's refill lock — and so every next refill — for the two-minute run lease. Its heartbeat
    stops with it, so the server ends its lock session after REFILL_LOCK_IDLE_SECONDS."""
    pool = make_pool("frozen-pool", target_size=3000, low_watermark=100, batch_size=100)
    refill_ready.set_faults(latency_ms=120)
    with open(tmp_path / "refill.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "refill_pool", "--pool", pool.name, "--trigger", "manual"],
            cwd=ROOT, env=child_env(refill_ready, REFILL_LOCK_IDLE_SECONDS="2"), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_for(lambda: RefillRun.objects.filter(pool=pool, inserted__gte=200).exists(), timeout=60,
                 message="the child to commit two batches")
        assert pool_refill_locked(pool_id=pool.pk)  # alive past 2 s thanks to its heartbeat
        os.kill(proc.pid, signal.SIGSTOP)
        wait_for(lambda: not pool_refill_locked(pool_id=pool.pk), timeout=20,
                 message="the server to end the frozen worker's lock session")
        refill_ready.reset_faults()
        nxt = refill_run(pool=pool, trigger=RefillTrigger.SCHEDULED)
        assert nxt.outcome == RefillOutcome.SUCCEEDED, nxt.error
        assert TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).count() >= 3000
        # Thawed, the old worker finds its lock session gone and stops instead of refilling beside it.
        inserted_before = TokenPair.objects.filter(pool=pool).count()
        os.kill(proc.pid, signal.SIGCONT)
        assert proc.wait(timeout=30) is not None
        assert TokenPair.objects.filter(pool=pool).count() <= inserted_before + 100  # at most its batch in flight
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        stop(proc)
        refill_ready.reset_faults()
    assert_whole_pairs(pool)


def test_a_real_qcluster_refills_a_pool_drained_by_reservations(refill_ready, make_pool, child_env, settings,
                                                                 tmp_path):
    from keys.models import ApiKey
    from pool.services import reservation_create

    settings.REFILL_TRIGGER_MIN_INTERVAL_SECONDS = 0
    pool = make_pool("e2e-pool", target_size=400, low_watermark=200, batch_size=100,
                     refill_interval_minutes=60)
    # Leave the scheduled refill for later: what must refill the pool here is the low-watermark trigger.
    from datetime import timedelta

    from django.utils import timezone
    from django_q.models import Schedule

    Schedule.objects.filter(name=f"refill:{pool.name}").update(next_run=timezone.now() + timedelta(hours=1))
    assert refill_run(pool=pool, trigger=RefillTrigger.STARTUP).inserted == 400
    key, _ = ApiKey.objects.create_key(name="e2e", scopes=["reserve"])

    with open(tmp_path / "qcluster.log", "wb") as log:
        cluster = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT,
                                   env=child_env(refill_ready, Q_WORKERS="1"), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(250):  # 400 → 150 available, below the watermark of 200
            reservation_create(pool=pool, api_key=key, idempotency_key=None, owner_ref=None)
        drained_at = time.monotonic()
        refilled = wait_for(
            lambda: RefillRun.objects.filter(pool=pool, trigger=RefillTrigger.LOW_WATERMARK,
                                             outcome=RefillOutcome.SUCCEEDED).first(),
            timeout=60, interval=0.25, message="the qcluster to run the low-watermark refill",
        )
        elapsed = time.monotonic() - drained_at
    finally:
        stopping = time.monotonic()
        stop(cluster)
        stop_seconds = time.monotonic() - stopping
    assert cluster.returncode == 0 and stop_seconds < 15  # a clean, prompt shutdown on SIGTERM
    # The refill topped up what was missing when it started; reservations made while it ran are not
    # chased (the next dip below the watermark queues the next refill).
    assert refilled.requested == refilled.inserted >= 200
    stored = TokenPair.objects.filter(pool=pool).count()
    inserted = sum(RefillRun.objects.filter(pool=pool).values_list("inserted", flat=True))
    assert stored == inserted  # the startup fill + the on-demand refill(s), nothing else
    assert TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).count() >= pool.low_watermark
    assert elapsed < 60
    print(f"qcluster refilled the pool {elapsed:.1f} s after the drain ended")


def test_a_refill_killed_mid_run_is_followed_by_the_next_within_seconds(refill_ready, make_pool, child_env, tmp_path):
    """Issue 20, finding 8: after the worker running an on-demand refill is killed (SIGKILL), the
    next low-watermark trigger enqueues a refill at once, not after the run lease's two minutes."""
    from refill.models import RefillLease
    from refill.services import refill_request

    pool = make_pool("killed-pool", target_size=3000, low_watermark=2000, batch_size=100)
    assert refill_request(pool=pool) is not None
    token = RefillLease.objects.get(pool=pool).token
    refill_ready.set_faults(latency_ms=120)
    code = f"from refill.tasks import refill_on_demand; refill_on_demand({pool.pk}, '{token}')"
    with open(tmp_path / "worker.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT,
                                env=child_env(refill_ready), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_for(lambda: RefillRun.objects.filter(pool=pool, inserted__gte=200).first(), timeout=60,
                 message="the worker to commit two batches")
        assert RefillLease.objects.get(pool=pool).state == "running"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        killed_at = time.monotonic()
    finally:
        stop(proc)
        refill_ready.reset_faults()
    assert TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).count() < pool.low_watermark
    task_id = wait_for(lambda: refill_request(pool=pool), timeout=30, message="a new refill to be enqueued")
    assert task_id and time.monotonic() - killed_at < 30
    lease = RefillLease.objects.get(pool=pool)
    assert lease.state == "queued" and lease.token != token
    # The queued refill runs (as the qcluster would) and fills the pool; the killed run is closed out.
    from refill.tasks import refill_on_demand

    summary = refill_on_demand(pool.pk, str(lease.token))
    assert summary["outcome"] == RefillOutcome.SUCCEEDED
    assert TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).count() == 3000
    assert RefillRun.objects.filter(pool=pool, outcome=RefillOutcome.FAILED, error__contains="Abandoned").count() == 1
