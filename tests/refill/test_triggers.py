"""The low-watermark trigger: cheap on the hot path, after commit, at most one refill queued or running."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import OrmQ

from pool.models import PairStatus, TokenPair
from refill.models import RefillLease, RefillOutcome, RefillRun, RefillTrigger
from refill.services import TASK_ON_DEMAND, refill_request, refill_run
from refill.triggers import on_pairs_reserved, pool_below_low_watermark


def queued_refills(pool) -> list[dict]:
    return [m.task for m in OrmQ.objects.all()
            if m.task.get("func") == TASK_ON_DEMAND and m.task["args"][0] == pool.pk]


def run_queued(task: dict):
    """Do what a qcluster worker does with the message: call the function with its arguments."""
    from pydoc import locate

    return locate(task["func"])(*task["args"], **task["kwargs"])


@pytest.fixture
def api_key(db):
    from keys.models import ApiKey

    key, _ = ApiKey.objects.create_key(name="refill-tests", scopes=["reserve"])
    return key


@pytest.fixture
def no_rate_limit(settings):
    # Every reservation checks the watermark, so the de-duplication below is the lease's doing,
    # not the in-process rate limiter's (which other processes would not share).
    settings.REFILL_TRIGGER_MIN_INTERVAL_SECONDS = 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_reservations_below_low_watermark_enqueue_exactly_one_refill(
        refill_ready, make_pool, api_key, no_rate_limit, run_concurrently):
    from pool.services import reservation_create

    pool = make_pool(target_size=300, low_watermark=250, batch_size=100)
    assert refill_run(pool=pool, trigger=RefillTrigger.STARTUP).inserted == 300

    def reserve() -> None:
        for _ in range(8):
            reservation_create(pool=pool, api_key=api_key, idempotency_key=None, owner_ref=None)

    run_concurrently(reserve, threads=16)
    assert TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).count() == 300 - 128
    [task] = queued_refills(pool)  # 78 reservations found the pool low; one refill was queued
    lease = RefillLease.objects.get(pool=pool)
    assert (lease.state, str(lease.token), lease.task_id) == ("queued", task["args"][1], task["id"])
    assert task["kwargs"]["trigger"] == RefillTrigger.LOW_WATERMARK

    # The worker runs it: the pool is topped up and the lease released for the next dip.
    summary = run_queued(task)
    assert summary["outcome"] == RefillOutcome.SUCCEEDED and summary["inserted"] == 128
    assert not RefillLease.objects.filter(pool=pool).exists()
    assert RefillRun.objects.get(pk=summary["run_id"]).trigger == RefillTrigger.LOW_WATERMARK
    OrmQ.objects.all().delete()
    for _ in range(60):
        reservation_create(pool=pool, api_key=api_key, idempotency_key=None, owner_ref=None)
    assert len(queued_refills(pool)) == 1


@pytest.mark.django_db(transaction=True)
def test_no_refill_is_queued_above_the_low_watermark(refill_ready, make_pool, api_key, no_rate_limit):
    from pool.services import reservation_create

    pool = make_pool(target_size=300, low_watermark=100)
    refill_run(pool=pool, trigger=RefillTrigger.STARTUP)
    for _ in range(50):
        reservation_create(pool=pool, api_key=api_key, idempotency_key=None, owner_ref=None)
    assert queued_refills(pool) == []
    assert not RefillLease.objects.filter(pool=pool).exists()


@pytest.mark.django_db(transaction=True)
def test_the_trigger_runs_after_the_reservation_commits_never_inside_it(make_pool, api_key, no_rate_limit):
    """The trigger has no on_commit of its own: it relies on the pool room sending ``pairs_reserved``
    after the commit with no transaction open, so its lease + enqueue never ride in (or roll back with)
    the reservation's transaction."""
    from pool.services import reservation_create
    from pool.signals import pairs_reserved

    pool = make_pool(low_watermark=100, pairs=3)  # far below the watermark
    in_transaction: list[bool] = []

    def spy(*, pool, count, **kwargs) -> None:
        in_transaction.append(connection.in_atomic_block)

    pairs_reserved.connect(spy, dispatch_uid="test-trigger-spy")
    try:
        with pytest.raises(RuntimeError), transaction.atomic():
            reservation_create(pool=pool, api_key=api_key, idempotency_key=None, owner_ref=None)
            raise RuntimeError("the caller's transaction fails after the reservation")
        assert in_transaction == [] and queued_refills(pool) == []
        with transaction.atomic():  # a caller's own transaction: the signal waits for its commit
            reservation_create(pool=pool, api_key=api_key, idempotency_key=None, owner_ref=None)
            assert in_transaction == [] and queued_refills(pool) == []
        assert in_transaction == [False]
        assert len(queued_refills(pool)) == 1
    finally:
        pairs_reserved.disconnect(dispatch_uid="test-trigger-spy")


@pytest.mark.django_db(transaction=True)
def test_disabled_pools_are_not_refilled_on_demand(make_pool, no_rate_limit):
    pool = make_pool(low_watermark=100, refill_enabled=False)
    on_pairs_reserved(pool=pool, count=1)
    assert queued_refills(pool) == []


@pytest.mark.django_db
def test_a_stale_lease_never_blocks_refills_forever(make_pool):
    pool = make_pool(low_watermark=100)
    assert refill_request(pool=pool) is not None
    assert refill_request(pool=pool) is None  # queued: de-duplicated
    # The worker that should have run it died, or the message was lost: the lease runs out.
    RefillLease.objects.filter(pool=pool).update(acquired_at=timezone.now() - timedelta(hours=1),
                                                 expires_at=timezone.now() - timedelta(seconds=1))
    assert refill_request(pool=pool) is not None
    assert len(queued_refills(pool)) == 2


@pytest.mark.django_db
def test_the_hot_path_is_rate_limited_per_pool_and_process(make_pool, settings):
    from refill.triggers import reset_rate_limit

    settings.REFILL_TRIGGER_MIN_INTERVAL_SECONDS = 60
    reset_rate_limit()
    pool = make_pool(low_watermark=100, pairs=150)  # above the watermark: the check alone
    with CaptureQueriesContext(connection) as first:
        on_pairs_reserved(pool=pool, count=1)
    with CaptureQueriesContext(connection) as second:
        on_pairs_reserved(pool=pool, count=1)
    reset_rate_limit()
    assert [q["sql"] for q in first.captured_queries if "LIMIT" in q["sql"]]  # the bounded count
    assert len(first.captured_queries) == 1
    assert second.captured_queries == []  # inside the window: no query (a trailing check is timed)


@pytest.mark.django_db
def test_the_watermark_check_is_bounded(make_pool):
    pool = make_pool(target_size=500, low_watermark=3, critical_watermark=0)
    assert pool_below_low_watermark(pool=pool)
    from pool.services import pairs_insert_bulk
    from tokenpool_tome.client import TokenPair as Pair

    pairs_insert_bulk(pool=pool, pairs=[Pair(f"{i:016d}", f"ext_{i:026d}") for i in range(3)])
    assert not pool_below_low_watermark(pool=pool)
    with CaptureQueriesContext(connection) as ctx:
        pool_below_low_watermark(pool=pool)
    assert "LIMIT" in ctx.captured_queries[0]["sql"]


@pytest.mark.django_db(transaction=True)
def test_a_burst_inside_one_rate_limit_window_still_ends_with_a_check(make_pool, settings):
    """The first reservation of a burst sees a full pool; the rest are rate-limited. A trailing
    check after the window must notice the pool went low (no later reservation is needed)."""
    import time

    from refill.triggers import reset_rate_limit

    settings.REFILL_TRIGGER_MIN_INTERVAL_SECONDS = 0.3
    reset_rate_limit()
    pool = make_pool(target_size=500, low_watermark=3, critical_watermark=0)
    from pool.services import pairs_insert_bulk
    from tokenpool_tome.client import TokenPair as Pair

    pairs_insert_bulk(pool=pool, pairs=[Pair(f"{i:016d}", f"ext_{i:026d}") for i in range(5)])
    on_pairs_reserved(pool=pool, count=1)  # checked now: 5 available, not low
    assert queued_refills(pool) == []
    TokenPair.objects.filter(pool=pool).delete()  # the rest of the burst drains the pool
    on_pairs_reserved(pool=pool, count=1)  # inside the window: deferred, not dropped
    deadline = time.monotonic() + 5
    while not queued_refills(pool) and time.monotonic() < deadline:
        time.sleep(0.05)
    reset_rate_limit()
    assert len(queued_refills(pool)) == 1


@pytest.mark.django_db(transaction=True)
def test_a_running_lease_whose_holder_is_gone_is_reclaimed_at_once(make_pool):
    """Issue 20, finding 8: a refill killed mid-run left a "running" lease for up to two minutes."""
    from refill.services.lease import lease_take_running
    from refill.services.lock import pool_lock

    pool = make_pool(low_watermark=100)
    with pool_lock(pool_id=pool.pk, hold_seconds=60) as lock:
        assert lock is not None
        token = refill_request(pool=pool)
        assert token is not None
        lease_take_running(pool_id=pool.pk, token=RefillLease.objects.get(pool=pool).token)
        # A live run holds the lock: its lease stands, however many triggers fire.
        assert refill_request(pool=pool) is None
    # The lock is gone (the run's session died with its worker) but the lease has minutes left.
    lease = RefillLease.objects.get(pool=pool)
    assert lease.state == "running" and lease.expires_at > timezone.now() + timedelta(seconds=60)
    assert refill_request(pool=pool) is not None
    assert RefillLease.objects.get(pool=pool).state == "queued"
    assert len(queued_refills(pool)) == 2


@pytest.mark.django_db(transaction=True)
def test_queued_and_cooldown_leases_are_not_reclaimed_before_they_expire(make_pool):
    pool = make_pool(low_watermark=100)
    assert refill_request(pool=pool) is not None
    assert refill_request(pool=pool) is None  # queued, nobody holds the lock yet: still de-duplicated
    RefillLease.objects.filter(pool=pool).update(state="cooldown")
    assert refill_request(pool=pool) is None  # a failure's cool-down is honoured


@pytest.mark.django_db(transaction=True)
def test_the_lock_heartbeat_keeps_a_live_run_and_ends_with_its_budget(make_pool, settings):
    """The lock session's idle timeout is short (a frozen worker must not hold the pool); a live run
    is kept by its heartbeat, and one hung past its budget is let go by the server."""
    import time

    from refill.services.lock import pool_lock, pool_refill_locked

    settings.REFILL_LOCK_IDLE_SECONDS = 1.0
    pool = make_pool(low_watermark=100)
    with pool_lock(pool_id=pool.pk, hold_seconds=60) as lock:
        assert lock is not None
        time.sleep(2.5)  # more than twice the idle timeout without a statement from the run
        assert pool_refill_locked(pool_id=pool.pk) and lock.alive()
    assert not pool_refill_locked(pool_id=pool.pk)
    with pool_lock(pool_id=pool.pk, hold_seconds=0.3) as lock:
        assert lock is not None
        deadline = time.monotonic() + 10
        while pool_refill_locked(pool_id=pool.pk) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pool_refill_locked(pool_id=pool.pk) and not lock.alive()
