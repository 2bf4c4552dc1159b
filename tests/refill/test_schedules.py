"""Each refill-enabled pool has exactly one django-q2 Schedule; pool edits keep it in step."""
from __future__ import annotations

import pytest
from django_q.models import Schedule

from refill.schedules import (
    EXPIRY_SCHEDULE_FUNC,
    EXPIRY_SCHEDULE_NAME,
    REFILL_SCHEDULE_FUNC,
    schedules_sync,
)

pytestmark = pytest.mark.django_db


def refill_schedules(name: str) -> list[Schedule]:
    return list(Schedule.objects.filter(name=f"refill:{name}"))


def test_a_new_pool_gets_one_minutes_schedule_at_its_interval(make_pool):
    pool = make_pool("alpha", refill_interval_minutes=7)
    [schedule] = refill_schedules("alpha")
    assert schedule.func == REFILL_SCHEDULE_FUNC
    assert schedule.schedule_type == Schedule.MINUTES
    assert schedule.minutes == 7
    assert schedule.repeats == -1
    assert schedule.kwargs == repr({"pool_id": pool.pk})


def test_pool_edits_update_disable_reenable_and_delete_the_schedule(make_pool):
    pool = make_pool("beta", refill_interval_minutes=30)
    [before] = refill_schedules("beta")

    pool.refill_interval_minutes = 5
    pool.save()
    [after] = refill_schedules("beta")
    assert (after.pk, after.minutes) == (before.pk, 5)  # updated in place, not re-created
    assert after.next_run <= before.next_run

    pool.refill_enabled = False
    pool.save()
    assert refill_schedules("beta") == []

    pool.refill_enabled = True
    pool.save()
    assert [s.minutes for s in refill_schedules("beta")] == [5]

    pool.delete()
    assert refill_schedules("beta") == []


def test_renaming_a_pool_moves_its_schedule(make_pool):
    pool = make_pool("gamma")
    pool.name = "gamma-renamed"
    pool.save()
    assert refill_schedules("gamma") == []
    assert len(refill_schedules("gamma-renamed")) == 1


def test_sync_is_idempotent_and_removes_duplicates_and_strays(make_pool):
    pool = make_pool("delta", refill_interval_minutes=10)
    Schedule.objects.create(name="refill:delta", func=REFILL_SCHEDULE_FUNC, schedule_type=Schedule.MINUTES,
                            minutes=99, kwargs=repr({"pool_id": pool.pk}))  # e.g. added by hand
    Schedule.objects.create(name="refill:no-such-pool", func=REFILL_SCHEDULE_FUNC,
                            schedule_type=Schedule.MINUTES, minutes=5, kwargs=repr({"pool_id": 10**9}))
    Schedule.objects.create(name=EXPIRY_SCHEDULE_NAME, func=EXPIRY_SCHEDULE_FUNC,
                            schedule_type=Schedule.MINUTES, minutes=1)
    result = schedules_sync()
    assert result.deleted == 3
    assert [s.minutes for s in refill_schedules("delta")] == [10]
    assert refill_schedules("no-such-pool") == []
    assert Schedule.objects.filter(name=EXPIRY_SCHEDULE_NAME).count() == 1
    again = schedules_sync()
    assert (again.created, again.updated, again.deleted) == (0, 0, 0)


def test_the_expiry_sweep_is_scheduled_every_minute():
    schedules_sync()
    [schedule] = Schedule.objects.filter(name=EXPIRY_SCHEDULE_NAME)
    assert (schedule.func, schedule.schedule_type, schedule.minutes) == (EXPIRY_SCHEDULE_FUNC, Schedule.MINUTES, 1)


def test_schedule_tasks_resolve_to_callables():
    from pydoc import locate  # django-q2 imports task functions by dotted path, like this

    assert callable(locate(REFILL_SCHEDULE_FUNC))
    assert callable(locate(EXPIRY_SCHEDULE_FUNC))


@pytest.mark.django_db(transaction=True)
def test_concurrent_syncs_never_create_duplicates(make_pool, run_concurrently):
    make_pool("epsilon")
    make_pool("zeta")
    Schedule.objects.all().delete()
    run_concurrently(schedules_sync, threads=8)  # re-raises what any thread raised
    from pool.models import Pool

    names = list(Schedule.objects.values_list("name", flat=True))
    expected = {f"refill:{n}" for n in Pool.objects.filter(refill_enabled=True).values_list("name", flat=True)}
    assert {"refill:epsilon", "refill:zeta"} <= expected
    assert sorted(names) == sorted(expected | {EXPIRY_SCHEDULE_NAME})  # each exactly once
