"""Contract section 1: ``manage.py pool_configure`` and ``manage.py refill_pool --pool NAME``."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connections

from monitoring.models import PoolConfigChange
from pool.models import PairStatus, Pool, TokenPair
from refill.models import RefillOutcome, RefillRun
from refill.services import REFILL_LOCK_CLASS
from tests.fixtures.processes import ROOT


def configure(*args: str) -> dict:
    out = StringIO()
    call_command("pool_configure", *args, stdout=out)
    return json.loads(out.getvalue().strip().splitlines()[-1])


@pytest.mark.django_db
def test_create_prints_settings_and_records_the_audit():
    shown = configure("ops-new", "--create", "--environment", "PRODUCTION", "--target-size", "3000",
                      "--low-watermark", "600", "--critical-watermark", "100", "--batch-size", "500",
                      "--refill-interval-minutes", "15", "--reservation-ttl-seconds", "120", "--no-refill")

    pool = Pool.objects.get(name="ops-new")
    assert shown == {"name": "ops-new", "environment": "PRODUCTION", "ns1_namespace": pool.ns1_namespace,
                     "ns2_namespace": pool.ns2_namespace, "target_size": 3000, "low_watermark": 600,
                     "critical_watermark": 100, "batch_size": 500, "refill_interval_minutes": 15,
                     "reservation_ttl_seconds": 120, "refill_enabled": False}
    assert pool.reservation_ttl == timedelta(seconds=120) and pool.refill_enabled is False
    audited = {c.field: (c.old, c.new, c.changed_by_id) for c in PoolConfigChange.objects.filter(pool=pool)}
    assert audited["target_size"] == (None, "3000", None)
    assert audited["refill_enabled"] == (None, "False", None)


@pytest.mark.django_db
def test_change_audits_only_what_changed_and_create_again_is_a_change(make_pool):
    pool = make_pool("ops-change", target_size=500, low_watermark=100, critical_watermark=10)

    shown = configure("ops-change", "--target-size", "800", "--refill")
    again = configure("ops-change", "--create", "--low-watermark", "200")

    assert shown["target_size"] == 800 and again["low_watermark"] == 200 and again["target_size"] == 800
    changes = list(PoolConfigChange.objects.filter(pool=pool).order_by("id").values_list("field", "old", "new"))
    assert changes == [("target_size", "500", "800"), ("low_watermark", "100", "200")]


@pytest.mark.django_db
@pytest.mark.parametrize("args, flag", [
    (["--low-watermark", "500"], "--low-watermark"),          # not below the target (500)
    (["--critical-watermark", "101"], "--critical-watermark"),  # above the low watermark (100)
    (["--batch-size", "5001"], "--batch-size"),                # above TOME's batch limit
    (["--target-size", "0"], "--target-size"),
    (["--reservation-ttl-seconds", "0"], "--reservation-ttl-seconds"),
    (["--refill-interval-minutes", "0"], "--refill-interval-minutes"),
])
def test_invalid_values_exit_2_and_change_nothing(make_pool, args, flag):
    pool = make_pool("ops-invalid", target_size=500, low_watermark=100, critical_watermark=10)
    before = Pool.objects.filter(pk=pool.pk).values().get()

    with pytest.raises(CommandError) as raised:
        call_command("pool_configure", "ops-invalid", "--target-size", "500", *args, stdout=StringIO())

    assert raised.value.returncode == 2
    assert flag in str(raised.value)
    assert Pool.objects.filter(pk=pool.pk).values().get() == before
    assert not PoolConfigChange.objects.filter(pool=pool).exists()


@pytest.mark.django_db
def test_unknown_pool_without_create_exits_2_and_creates_nothing():
    with pytest.raises(CommandError) as raised:
        call_command("pool_configure", "ops-missing", "--target-size", "10", stdout=StringIO())
    assert raised.value.returncode == 2
    assert not Pool.objects.filter(name="ops-missing").exists()
    with pytest.raises(CommandError) as raised:  # not a slug: the form's validation, not a 500
        call_command("pool_configure", "bad name!", "--create", stdout=StringIO())
    assert raised.value.returncode == 2 and "NAME" in str(raised.value)


@pytest.mark.django_db(transaction=True)
def test_as_a_process_json_last_line_and_exit_status_2(child_env):
    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "manage.py", "pool_configure", *args], cwd=ROOT, env=child_env(),
                              capture_output=True, text=True, timeout=120, check=False)

    ok = manage("ops-proc", "--create", "--target-size", "900", "--low-watermark", "300", "--critical-watermark", "50")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads(ok.stdout.strip().splitlines()[-1])["target_size"] == 900

    bad = manage("ops-proc", "--low-watermark", "900")
    assert bad.returncode == 2
    assert "--low-watermark" in bad.stderr and "below the target size" in bad.stderr
    assert Pool.objects.get(name="ops-proc").low_watermark == 300


@pytest.mark.django_db(transaction=True)
def test_refill_pool_fills_to_target_even_with_refills_disabled(refill_ready, make_pool):
    pool = make_pool("ops-refill", pairs=40, target_size=300, low_watermark=50, batch_size=100,
                     refill_enabled=False)

    call_command("refill_pool", "--pool", pool.name, stdout=StringIO())

    assert TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).count() == 300


@pytest.mark.django_db(transaction=True)
def test_refill_pool_waits_for_a_running_refill_then_tops_up(refill_ready, make_pool):
    pool = make_pool("ops-locked", target_size=200, low_watermark=50, batch_size=100)
    locked = threading.Event()

    def hold_the_lock() -> None:  # another session runs a refill of this pool for 2.5 s
        holder = connections.create_connection("default")
        try:
            with holder.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_lock(%s, %s)", [REFILL_LOCK_CLASS, pool.pk])
                locked.set()
                cursor.execute("SELECT pg_sleep(2.5)")
        finally:
            holder.close()  # the session's end releases the lock

    holder_thread = threading.Thread(target=hold_the_lock)
    holder_thread.start()
    assert locked.wait(timeout=60)
    out = StringIO()
    try:
        call_command("refill_pool", "--pool", pool.name, stdout=out)
    finally:
        holder_thread.join()

    assert "waiting" in out.getvalue()
    assert TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).count() == 200
    outcomes = set(RefillRun.objects.filter(pool=pool).values_list("outcome", flat=True))
    assert outcomes == {RefillOutcome.SKIPPED_LOCKED, RefillOutcome.SUCCEEDED}
