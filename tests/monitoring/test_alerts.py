"""Alerts: each condition opens one PoolAlert, resolves by itself, and notifies by e-mail and webhook."""
from __future__ import annotations

import secrets
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from monitoring.alerts import alerts_evaluate
from monitoring.metrics import TOME_LAST_OK, TOME_LAST_UNAVAILABLE, record_tome_call
from monitoring.models import AlertCondition, PoolAlert
from monitoring.notifications import webhook_post
from monitoring.services import pool_snapshots_take
from pool.models import Pool
from refill.models import RefillOutcome, RefillRun, RefillTrigger
from tokenpool_tome.client import CallRecord


def _quiet_pool(make_pool, *, pairs: int = 100, **fields) -> Pool:
    """A pool whose TOME namespaces are unique to the test (metrics files are shared by the run)."""
    tag = secrets.token_hex(3)
    fields = {"target_size": 200, "low_watermark": 50, "critical_watermark": 20,
              "ns1_namespace": f"ns1-{tag}", "ns2_namespace": f"ns2-{tag}", **fields}
    return make_pool(f"alerts-{tag}", pairs=pairs, **fields)


def _conditions(pool: Pool, *, open_only: bool = True) -> list[str]:
    qs = PoolAlert.objects.filter(pool=pool)
    if open_only:
        qs = qs.filter(resolved_at__isnull=True)
    return sorted(qs.values_list("condition", flat=True))


def _run(pool: Pool, outcome: str) -> RefillRun:
    return RefillRun.objects.create(pool=pool, trigger=RefillTrigger.SCHEDULED, outcome=outcome,
                                    finished_at=timezone.now(),
                                    error="TOME unavailable: 503" if outcome == "failed" else "")


@pytest.fixture
def alert_mail(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.ALERT_EMAILS = ["ops@example.test"]
    mail.outbox.clear()
    return mail.outbox


@pytest.mark.django_db
def test_low_and_critical_open_once_notify_and_resolve(make_pool, pair_states, alert_mail, webhook_server):
    pool = _quiet_pool(make_pool, pairs=60)
    pair_states(pool, used=45)  # 15 available: below low (50) and critical (20)

    first = alerts_evaluate(probe=lambda: True)
    assert {a.condition for a in first.opened if a.pool_id == pool.pk} == {"pool_low", "pool_critical"}
    assert _conditions(pool) == ["pool_critical", "pool_low"]
    critical = PoolAlert.objects.get(pool=pool, condition="pool_critical")
    assert critical.severity == "critical" and critical.details["available"] == 15
    assert critical.last_notified_at is not None

    again = alerts_evaluate(probe=lambda: True)  # still low: no second alert, no second notification
    assert [a for a in again.opened if a.pool_id == pool.pk] == []
    assert PoolAlert.objects.filter(pool=pool).count() == 2
    mine = [m for m in alert_mail if pool.name in m.subject]
    assert len(mine) == 2 and all("OPENED" in m.subject for m in mine) and mine[0].to == ["ops@example.test"]
    hooks = [h for h in webhook_server.delivered if pool.name in h["text"]]
    assert len(hooks) == 2 and set(hooks[0]) == {"text"}

    make_pool(pool.name, pairs=100)  # refilled: 115 available
    resolved = alerts_evaluate(probe=lambda: True)
    assert {a.condition for a in resolved.resolved if a.pool_id == pool.pk} == {"pool_low", "pool_critical"}
    assert _conditions(pool) == []
    assert all(a.resolved_at for a in PoolAlert.objects.filter(pool=pool))
    assert len([m for m in alert_mail if pool.name in m.subject and "RESOLVED" in m.subject]) == 2
    assert len([h for h in webhook_server.delivered if pool.name in h["text"] and "RESOLVED" in h["text"]]) == 2

    pair_states(pool, used=100)  # low again later: a new alert, the old one stays in history
    alerts_evaluate(probe=lambda: True)
    assert PoolAlert.objects.filter(pool=pool, condition="pool_low").count() == 2
    assert _conditions(pool) == ["pool_critical", "pool_low"]


@pytest.mark.django_db
def test_disabled_never_used_pool_raises_no_watermark_alerts(make_pool):
    pool = _quiet_pool(make_pool, pairs=0, refill_enabled=False)
    alerts_evaluate(probe=lambda: True, notify=False)
    assert _conditions(pool) == []


@pytest.mark.django_db
def test_refill_failing_after_n_consecutive_failures(make_pool, settings):
    settings.ALERT_REFILL_FAILURES = 3
    pool = _quiet_pool(make_pool)
    _run(pool, RefillOutcome.SUCCEEDED)
    _run(pool, RefillOutcome.FAILED)
    _run(pool, RefillOutcome.FAILED)
    _run(pool, RefillOutcome.SKIPPED_LOCKED)  # not an attempt: neither a failure nor a success
    alerts_evaluate(probe=lambda: True, notify=False)
    assert "refill_failing" not in _conditions(pool)

    _run(pool, RefillOutcome.FAILED)
    alerts_evaluate(probe=lambda: True, notify=False)
    alert = PoolAlert.objects.get(pool=pool, condition="refill_failing", resolved_at__isnull=True)
    assert alert.severity == "critical" and "503" in alert.details["last_error"]

    _run(pool, RefillOutcome.SUCCEEDED)
    alerts_evaluate(probe=lambda: True, notify=False)
    assert "refill_failing" not in _conditions(pool)


@pytest.mark.django_db
def test_direct_fallback_opens_while_recent_and_resolves_after_window(make_pool, pair_states, settings):
    settings.ALERT_DIRECT_WINDOW_MINUTES = 15
    pool = _quiet_pool(make_pool)
    pair_states(pool, direct=2)
    alerts_evaluate(probe=lambda: True, notify=False)
    alert = PoolAlert.objects.get(pool=pool, condition="direct_fallback", resolved_at__isnull=True)
    assert alert.details["direct_reservations"] == 2

    pool_snapshots_take()  # the snapshot schedule's next run: the window's baseline from now on
    later = timezone.now() + timedelta(minutes=16)
    alerts_evaluate(now=later, probe=lambda: True, notify=False)
    assert "direct_fallback" not in _conditions(pool)


def _tome_call(namespace: str, *, ok: bool) -> CallRecord:
    return CallRecord(namespace=namespace, operation="generate", batch_size=1, attempt=1, latency_seconds=0.01,
                      outcome="ok" if ok else "error", status_code=200 if ok else 503,
                      error=None if ok else "503 unavailable")


@pytest.mark.django_db
def test_tome_unavailable_follows_the_newest_evidence_of_any_process(make_pool):
    pool = _quiet_pool(make_pool)
    record_tome_call(_tome_call(pool.ns1_namespace, ok=True))
    alerts_evaluate(probe=lambda: True, notify=False)
    assert "tome_unavailable" not in _conditions(pool)

    time.sleep(0.01)
    record_tome_call(_tome_call(pool.ns1_namespace, ok=False))  # newest call failed
    alerts_evaluate(probe=lambda: pytest.fail("fresh evidence needs no probe"), notify=False)
    assert "tome_unavailable" in _conditions(pool)

    time.sleep(0.01)
    record_tome_call(_tome_call(pool.ns1_namespace, ok=True))  # TOME answered again
    alerts_evaluate(probe=lambda: pytest.fail("fresh evidence needs no probe"), notify=False)
    assert "tome_unavailable" not in _conditions(pool)


@pytest.mark.django_db
def test_a_stale_tome_failure_is_rechecked_with_a_probe(make_pool):
    pool = _quiet_pool(make_pool)
    TOME_LAST_OK.labels(pool.ns2_namespace).set(time.time() - 3600)
    TOME_LAST_UNAVAILABLE.labels(pool.ns2_namespace).set(time.time() - 1800)  # nobody called TOME since
    probes = []
    alerts_evaluate(probe=lambda: probes.append(1) or False, notify=False)
    assert "tome_unavailable" in _conditions(pool) and probes == [1]
    alerts_evaluate(probe=lambda: True, notify=False)
    assert "tome_unavailable" not in _conditions(pool)


@pytest.mark.django_db(transaction=True)
def test_concurrent_evaluators_open_and_notify_once(make_pool, pair_states, webhook_server, run_concurrently):
    pool = _quiet_pool(make_pool, pairs=60)
    pair_states(pool, used=50)
    results = run_concurrently(lambda: alerts_evaluate(probe=lambda: True), threads=4)
    opened = [a.condition for result in results for a in result.opened if a.pool_id == pool.pk]
    assert sorted(opened) == ["pool_critical", "pool_low"]
    assert PoolAlert.objects.filter(pool=pool).count() == 2
    assert len([h for h in webhook_server.delivered if pool.name in h["text"]]) == 2


def test_webhook_is_retried_with_backoff_then_delivered(webhook_server):
    webhook_server.fail_next(2, status=503)
    assert webhook_post(url=webhook_server.url, payload={"text": "hello"}, attempts=4, backoff_initial=0.01)
    assert [r["status"] for r in webhook_server.requests] == [503, 503, 200]
    assert webhook_server.requests[-1]["content_type"] == "application/json"


def test_webhook_gives_up_without_raising(webhook_server):
    webhook_server.fail_next(10, status=500)
    assert webhook_post(url=webhook_server.url, payload={"text": "x"}, attempts=3, backoff_initial=0.01) is False
    assert len(webhook_server.requests) == 3
    # Nothing listens there: a connection error, also swallowed.
    assert webhook_post(url="http://127.0.0.1:9/hook", payload={"text": "x"}, attempts=2, backoff_initial=0.01) is False


def test_webhook_client_error_is_not_retried(webhook_server):
    webhook_server.fail_next(1, status=404)
    assert webhook_post(url=webhook_server.url, payload={"text": "x"}, attempts=4, backoff_initial=0.01) is False
    assert len(webhook_server.requests) == 1


@pytest.mark.django_db
def test_failing_notifications_never_break_evaluation(make_pool, pair_states, settings, alert_mail):
    settings.ALERT_WEBHOOK_URL = "http://127.0.0.1:9/unreachable"
    settings.ALERT_WEBHOOK_ATTEMPTS = 2
    settings.ALERT_WEBHOOK_BACKOFF_SECONDS = 0.01
    settings.EMAIL_BACKEND = "tests.monitoring.test_alerts.BrokenEmailBackend"
    pool = _quiet_pool(make_pool, pairs=10)
    result = alerts_evaluate(probe=lambda: True)
    assert {a.condition for a in result.opened if a.pool_id == pool.pk} == {"pool_low", "pool_critical"}
    assert PoolAlert.objects.get(pool=pool, condition="pool_low").last_notified_at is None


class BrokenEmailBackend:
    def __init__(self, *args, **kwargs) -> None:
        pass

    def send_messages(self, messages):
        raise ConnectionRefusedError("smtp down")


@pytest.mark.django_db
def test_acknowledge_from_the_admin_list(admin_client, admin_user, make_pool):
    pool = _quiet_pool(make_pool)
    alert = PoolAlert.objects.create(pool=pool, condition=AlertCondition.POOL_LOW, severity="warning",
                                     opened_at=timezone.now())
    response = admin_client.post("/admin/monitoring/poolalert/",
                                 {"action": "acknowledge", "_selected_action": [alert.pk]})
    assert response.status_code == 302
    alert.refresh_from_db()
    assert alert.acknowledged_by == admin_user and alert.acknowledged_at is not None
    listing = admin_client.get("/admin/monitoring/poolalert/?state=open")
    assert listing.status_code == 200 and b"open, acknowledged" in listing.content
    assert admin_client.get(f"/admin/monitoring/poolalert/{alert.pk}/change/").status_code == 200
