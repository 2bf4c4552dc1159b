"""django-q2 with the Redis broker (REDIS_URL), for real: the refill schedule runs through Redis,
and a qcluster killed with SIGKILL mid-refill loses no committed batch and doubles none.

(The low-watermark trigger through Redis — queued by a web server, run by a qcluster — is covered by
tests/scaleout/test_multi_instance.py's redis variant.)"""
from __future__ import annotations

import os
import signal
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import OrmQ, Schedule, Success

from pool.models import PairStatus, TokenPair
from refill.models import RefillOutcome, RefillRun, RefillTrigger
from refill.services.lock import pool_refill_locked
from tests.refill.test_refill_run import assert_whole_pairs
from tests.scaleout.stack import Stack, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _schedule_through_redis(monkeypatch, url: str) -> None:
    """One tick of django-q2's scheduler with the Redis broker: exactly what a cluster's guard does
    every 30 s (``scheduler(broker=self.broker)``), called now so the test does not wait for it."""
    from django_q.brokers.redis_broker import Redis
    from django_q.conf import Conf
    from django_q.scheduler import scheduler

    monkeypatch.setattr(Conf, "REDIS", url)  # this test process itself runs the ORM broker
    broker = Redis()
    try:
        scheduler(broker=broker)
    finally:
        broker.connection.close()


def test_scheduled_refill_on_redis_survives_a_sigkilled_qcluster(refill_ready, make_pool, child_env, redis_server,
                                                                   tmp_path, monkeypatch):
    redis_server.flush()
    pool = make_pool("redis-sched", target_size=1500, low_watermark=100, batch_size=100, refill_interval_minutes=1)
    schedule = Schedule.objects.get(name=f"refill:{pool.name}")
    Schedule.objects.filter(pk=schedule.pk).update(next_run=timezone.now() - timedelta(seconds=1))
    refill_ready.set_faults(latency_ms=100)  # ~0.25 s per batch: a wide window to land the kill in
    stack = Stack(env=child_env(refill_ready, REDIS_URL=redis_server.url, Q_WORKERS="1",
                                TOME_MAX_ATTEMPTS="1"), logdir=tmp_path)
    try:
        first = stack.start_qcluster("qcluster-1")
        _schedule_through_redis(monkeypatch, redis_server.url)
        run = wait_for(lambda: RefillRun.objects.filter(pool=pool, trigger=RefillTrigger.SCHEDULED,
                                                        inserted__gte=300).first(),
                       timeout=60, interval=0.05, message="the scheduled refill to commit three batches")
        os.killpg(first.pid, signal.SIGKILL)  # the whole cluster: guard, pusher, worker, monitor
        first.wait(timeout=10)

        run.refresh_from_db()
        assert run.outcome == RefillOutcome.RUNNING  # it never got to say
        stored = TokenPair.objects.filter(pool=pool).count()
        assert stored == run.inserted and stored % 100 == 0 and 300 <= stored < 1500  # whole batches only
        wait_for(lambda: not pool_refill_locked(pool_id=pool.pk), timeout=10, message="the lock to go with the worker")

        # A new cluster, and the schedule due again: the next scheduled run finishes the job.
        Schedule.objects.filter(pk=schedule.pk).update(next_run=timezone.now() - timedelta(seconds=1))
        stack.start_qcluster("qcluster-2")
        _schedule_through_redis(monkeypatch, redis_server.url)
        done = wait_for(lambda: RefillRun.objects.filter(pool=pool, trigger=RefillTrigger.SCHEDULED,
                                                         outcome=RefillOutcome.SUCCEEDED).first(),
                        timeout=60, interval=0.2, message="the next scheduled refill to succeed")
        # The cluster records the task's result through its monitor, just after the task returns.
        wait_for(lambda: Success.objects.filter(func="refill.tasks.refill_scheduled").exists(),
                 timeout=30, interval=0.2, message="the task result to be saved")
    finally:
        stack.stop()
        refill_ready.reset_faults()

    run.refresh_from_db()
    assert run.outcome == RefillOutcome.FAILED and "Abandoned" in run.error
    assert done.requested == 1500 - stored == done.inserted
    # No batch lost, none doubled: every stored pair is counted by exactly one run, and the pool is
    # exactly at its target.
    assert TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).count() == 1500
    assert sum(RefillRun.objects.filter(pool=pool).values_list("inserted", flat=True)) == 1500
    assert_whole_pairs(pool)
    # It went through Redis: nothing ever sat in the ORM queue (and the task result was recorded).
    assert OrmQ.objects.count() == 0
