"""Alert conditions, evaluated every ``ALERT_EVALUATE_MINUTES`` by a django-q2 schedule.

Each condition that holds opens one ``PoolAlert`` per pool (the database refuses a second open
one, so concurrent evaluators cannot double-notify) and notifies; when it stops holding the
alert is resolved and notified again. A condition that cannot be judged this round (no evidence
either way) leaves the alert as it is.

Which process knows whether TOME is down? Every process has its own circuit breaker, and the
evaluator's process may not have called TOME at all. So the evaluator reads the newest "TOME
answered" and "TOME unreachable" times of every process on the host from the shared multiprocess
metric files (``monitoring/metrics.py``); when the newest evidence is an old failure it asks
TOME directly (``ping``) instead of trusting stale data.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from monitoring.metrics import tome_last_seen
from monitoring.models import AlertCondition, AlertSeverity, PoolAlert
from monitoring.notifications import alert_notify
from monitoring.selectors import (
    PairCounts,
    direct_reservations_since,
    pair_counts,
    refill_recent_outcomes,
)
from pool.models import Pool
from refill.models import RefillOutcome, RefillRun
from tome.provider import get_tome_client

logger = logging.getLogger("tokenpool.alerts")

# A failure newer than this is current; an older one (nothing called TOME since) is re-checked.
TOME_EVIDENCE_FRESH_SECONDS = 120


@dataclass(frozen=True)
class Finding:
    condition: str
    severity: str
    active: bool | None  # None: cannot tell this round, leave any alert as it is
    details: dict[str, object] = field(default_factory=dict)


@dataclass
class EvaluationResult:
    opened: list[PoolAlert] = field(default_factory=list)
    resolved: list[PoolAlert] = field(default_factory=list)


class TomeHealth:
    """Per-namespace "is TOME unreachable" judged from every local process's newest evidence."""

    def __init__(self, *, seen: dict[str, dict[str, float]], probe: Callable[[], bool], now: float) -> None:
        self._seen = seen
        self._probe = probe
        self._probe_result: bool | None = None
        self._now = now

    def namespace_down(self, namespace: str) -> tuple[bool, dict[str, object]]:
        seen = self._seen.get(namespace, {})
        ok, bad = seen.get("ok", 0.0), seen.get("unavailable", 0.0)
        details: dict[str, object] = {}
        if bad:
            details["last_unreachable_at"] = _iso(bad)
        if ok:
            details["last_ok_at"] = _iso(ok)
        if bad <= ok:
            return False, details
        if self._now - bad <= TOME_EVIDENCE_FRESH_SECONDS:
            return True, details
        # The newest evidence is an old failure and nobody has called TOME since: ask TOME.
        if self._probe_result is None:
            self._probe_result = bool(self._probe())
        details["probe_ok"] = self._probe_result
        return not self._probe_result, details


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.get_current_timezone()).isoformat(timespec="seconds")


def _default_probe() -> bool:
    try:
        return get_tome_client().ping()
    except Exception:
        logger.warning("tome_probe_failed", exc_info=True)
        return False


def pool_findings(*, pool: Pool, counts: PairCounts, tome: TomeHealth, now: datetime) -> list[Finding]:
    findings: list[Finding] = []
    # A pool that is switched off and never served anything is not in service: no watermark alerts.
    in_service = pool.refill_enabled or counts.reservations_total > 0
    available = counts.available
    findings.append(Finding(
        AlertCondition.POOL_LOW, AlertSeverity.WARNING,
        in_service and available < pool.low_watermark,
        {"available": available, "low_watermark": pool.low_watermark}))
    findings.append(Finding(
        AlertCondition.POOL_CRITICAL, AlertSeverity.CRITICAL,
        in_service and available < pool.critical_watermark,
        {"available": available, "critical_watermark": pool.critical_watermark}))

    n = settings.ALERT_REFILL_FAILURES
    outcomes = refill_recent_outcomes(pool=pool, limit=n)
    failing = len(outcomes) == n and all(o == RefillOutcome.FAILED for o in outcomes)
    refill_details: dict[str, object] = {"consecutive_failures_threshold": n}
    if failing:
        last = RefillRun.objects.filter(pool=pool, outcome=RefillOutcome.FAILED).order_by("-started_at").first()
        if last is not None:
            refill_details["last_error"] = (last.error or "")[:300]
            refill_details["last_run_id"] = last.pk
    findings.append(Finding(AlertCondition.REFILL_FAILING, AlertSeverity.CRITICAL, failing, refill_details))

    down_any = False
    tome_details: dict[str, object] = {}
    for namespace in dict.fromkeys([pool.ns1_namespace, pool.ns2_namespace]):
        down, details = tome.namespace_down(namespace)
        down_any = down_any or down
        tome_details.update({f"{namespace}_{k}": v for k, v in details.items()})
    findings.append(Finding(AlertCondition.TOME_UNAVAILABLE, AlertSeverity.CRITICAL, down_any, tome_details))

    window = settings.ALERT_DIRECT_WINDOW_MINUTES
    direct = direct_reservations_since(pool=pool, since=now - timedelta(minutes=window), direct_now=counts.direct)
    findings.append(Finding(AlertCondition.DIRECT_FALLBACK, AlertSeverity.WARNING, direct > 0,
                            {"direct_reservations": direct, "window_minutes": window}))
    return findings


def alert_open(*, pool: Pool, finding: Finding, now: datetime) -> PoolAlert | None:
    """Open the alert unless one is already open; returns it only when this call opened it."""
    existing = PoolAlert.objects.filter(pool=pool, condition=finding.condition, resolved_at__isnull=True)
    if existing.exists():
        existing.update(details=finding.details)  # keep the latest figures visible in the admin
        return None
    try:
        with transaction.atomic():
            return PoolAlert.objects.create(pool=pool, condition=finding.condition, severity=finding.severity,
                                            opened_at=now, details=finding.details)
    except IntegrityError:  # another evaluator opened it between our check and insert
        return None


def alert_resolve(*, pool: Pool, condition: str, now: datetime) -> PoolAlert | None:
    """Resolve the open alert; returns it only when this call resolved it."""
    alert = PoolAlert.objects.filter(pool=pool, condition=condition, resolved_at__isnull=True).first()
    if alert is None:
        return None
    # Conditional update: of two racing evaluators exactly one sees a row updated and notifies.
    if not PoolAlert.objects.filter(pk=alert.pk, resolved_at__isnull=True).update(resolved_at=now):
        return None
    alert.resolved_at = now
    return alert


def alerts_evaluate(*, now: datetime | None = None, probe: Callable[[], bool] | None = None,
                    notify: bool = True) -> EvaluationResult:
    """Evaluate every condition of every pool, open/resolve alerts, then notify (outside any transaction)."""
    now = now or timezone.now()
    pools = list(Pool.objects.order_by("name"))
    counts = pair_counts(pools=pools)
    tome = TomeHealth(seen=tome_last_seen(), probe=probe or _default_probe, now=time.time())
    result = EvaluationResult()
    for pool in pools:
        for finding in pool_findings(pool=pool, counts=counts[pool.pk], tome=tome, now=now):
            _finding_apply(pool=pool, finding=finding, now=now, result=result)
    _result_report(result, notify=notify)
    return result


def _finding_apply(*, pool: Pool, finding: Finding, now: datetime, result: EvaluationResult) -> None:
    """Open or resolve the alert of one finding (a finding without a verdict changes nothing)."""
    if finding.active is None:
        return
    if finding.active:
        alert = alert_open(pool=pool, finding=finding, now=now)
        if alert is not None:
            result.opened.append(alert)
    else:
        alert = alert_resolve(pool=pool, condition=finding.condition, now=now)
        if alert is not None:
            result.resolved.append(alert)


def _result_report(result: EvaluationResult, *, notify: bool) -> None:
    """Log what changed, then notify (outside any transaction)."""
    for alert in result.opened:
        logger.warning("alert_opened", extra={"pool": alert.pool.name, "condition": alert.condition,
                                              "severity": alert.severity, "details": alert.details})
    for alert in result.resolved:
        logger.info("alert_resolved", extra={"pool": alert.pool.name, "condition": alert.condition})
    if notify:
        for alert in result.opened:
            alert_notify(alert=alert, event="opened")
        for alert in result.resolved:
            alert_notify(alert=alert, event="resolved")
