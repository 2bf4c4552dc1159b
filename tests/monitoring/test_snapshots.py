"""Pool snapshots (the dashboard's history) and the monitoring schedules."""
from __future__ import annotations

import secrets
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import Schedule

from monitoring.alerts import alerts_evaluate
from monitoring.models import PoolAlert, PoolSnapshot
from monitoring.schedules import (
    ALERTS_SCHEDULE_NAME,
    SNAPSHOT_SCHEDULE_NAME,
    monitoring_schedules_ensure,
)
from monitoring.selectors import pool_health
from monitoring.services import pool_snapshots_take
from monitoring.tasks import alerts_evaluate_task, snapshots_take_task
from pool.models import PairStatus, Pool, TokenPair
from refill.models import RefillRun, RefillTrigger

pytestmark = pytest.mark.django_db


def test_snapshot_records_every_pools_counts(make_pool, pair_states):
    pool = make_pool(pairs=25)
    other = make_pool(pairs=3)
    pair_states(pool, reserved=2, used=5, retired=1, direct=4)
    RefillRun.objects.create(pool=pool, trigger=RefillTrigger.MANUAL, outcome="succeeded",
                             finished_at=timezone.now(), requested=25, inserted=25, tome_calls=2)

    snapshots = {s.pool_id: s for s in pool_snapshots_take()}
    snap = snapshots[pool.pk]
    for status, field in ((PairStatus.AVAILABLE, "available"), (PairStatus.RESERVED, "reserved"),
                          (PairStatus.USED, "used"), (PairStatus.RETIRED, "retired")):
        assert getattr(snap, field) == TokenPair.objects.filter(pool=pool, status=status).count()
    assert (snap.available, snap.reserved, snap.used, snap.retired) == (17, 6, 5, 1)
    assert snap.reserved_total == 12 and snap.reserved_direct == 4
    assert snap.tome_calls_total == 2 + 2 * 4  # refill calls + NS1/NS2 per direct pair
    assert snapshots[other.pk].available == 3


def test_snapshot_task_prunes_old_history(make_pool, settings):
    settings.MONITORING_SNAPSHOT_RETENTION_DAYS = 7
    pool = make_pool(pairs=1)
    Pool.objects.exclude(pk=pool.pk).delete()  # the migration's "default" pool, when present
    eight_days_ago, six_days_ago = timezone.now() - timedelta(days=8), timezone.now() - timedelta(days=6)
    pool_snapshots_take(now=eight_days_ago)
    pool_snapshots_take(now=six_days_ago)
    started = timezone.now()
    assert snapshots_take_task() == 1  # one snapshot per pool
    taken = sorted(PoolSnapshot.objects.filter(pool=pool).values_list("taken_at", flat=True))
    assert len(taken) == 2
    assert taken[0] == six_days_ago and taken[1] >= started  # the 8-day-old one was pruned


def test_alert_task_reports_what_it_did(make_pool, settings):
    settings.ALERT_WEBHOOK_URL = ""
    settings.ALERT_EMAILS = []
    # Namespaces of its own: no other test's TOME call history can open a tome_unavailable alert here.
    pool = make_pool(pairs=0, target_size=10, low_watermark=5, critical_watermark=1,
                           ns1_namespace=f"ns1-{secrets.token_hex(3)}", ns2_namespace=f"ns2-{secrets.token_hex(3)}")
    Pool.objects.exclude(pk=pool.pk).delete()  # the migration's "default" pool, when present
    assert alerts_evaluate_task() == {"opened": 2, "resolved": 0}
    open_alerts = PoolAlert.objects.filter(pool=pool, resolved_at__isnull=True)
    assert set(open_alerts.values_list("condition", "severity")) == {
        ("pool_low", "warning"), ("pool_critical", "critical")}

    assert alerts_evaluate_task() == {"opened": 0, "resolved": 0}  # still open: nothing new to report
    make_pool(pool.name, pairs=10)
    assert alerts_evaluate_task() == {"opened": 0, "resolved": 2}
    assert not open_alerts.exists()


def test_schedules_exist_once_after_migrate_and_are_idempotent(settings):
    # The test database was built by migrate, whose post_migrate receiver created them.
    for name in (SNAPSHOT_SCHEDULE_NAME, ALERTS_SCHEDULE_NAME):
        assert Schedule.objects.filter(name=name).count() == 1
    assert monitoring_schedules_ensure() == 0  # nothing to change

    snap = Schedule.objects.get(name=SNAPSHOT_SCHEDULE_NAME)
    assert (snap.func, snap.schedule_type, snap.minutes, snap.repeats) == (
        "monitoring.tasks.snapshots_take_task", Schedule.MINUTES, 5, -1)

    Schedule.objects.create(name=ALERTS_SCHEDULE_NAME, func="x.y", schedule_type=Schedule.ONCE)  # a stray copy
    settings.MONITORING_SNAPSHOT_MINUTES = 10
    assert monitoring_schedules_ensure() == 2
    assert Schedule.objects.filter(name=ALERTS_SCHEDULE_NAME).count() == 1
    assert Schedule.objects.get(name=SNAPSHOT_SCHEDULE_NAME).minutes == 10
    call_command("migrate", verbosity=0)  # post_migrate again: still one of each
    assert Schedule.objects.filter(name__startswith="monitoring:").count() == 2


def test_no_periodic_task_and_no_dashboard_view_queries_the_pair_table(make_pool, pair_states, admin_client):
    """Snapshots, alert evaluation, /metrics and the dashboard read the trigger-kept counters and the
    snapshots: not one of their SQL statements names the pair table (issue 21: the periodic COUNT(*)
    over core_tokenpair ran in 45 % of pg_stat_activity samples on a 5M-row table)."""
    pool = make_pool(pairs=30)
    pair_states(pool, reserved=2, used=3, retired=1, direct=2)
    with CaptureQueriesContext(connection) as queries:
        snapshots_take_task()
        alerts_evaluate(probe=lambda: True, notify=False)
        assert admin_client.get("/metrics").status_code == 200
        assert admin_client.get("/admin/dashboard/").status_code == 200
        assert pool_health(pool=pool)["used"] == 3
    statements = [q["sql"] for q in queries.captured_queries]
    assert any("pool_paircounter" in sql for sql in statements)
    assert not [sql for sql in statements if "core_tokenpair" in sql]
    assert PoolSnapshot.objects.get(pool=pool).reserved_total == 8
