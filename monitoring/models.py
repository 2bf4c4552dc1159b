# mypy: allow-subclassing-any
# (Django ships no type information and the project runs mypy without django-stubs: models.Model is Any.)
"""Operations records: periodic pool snapshots, alerts, and the audit of pool tunable edits."""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from common.choices import TextChoices

__all__ = ["PoolSnapshot", "AlertCondition", "AlertSeverity", "PoolAlert", "PoolConfigChange", "ConsumerAdoption"]


class PoolSnapshot(models.Model):
    """A pool's counts at one moment, written every ``MONITORING_SNAPSHOT_MINUTES`` by a task.

    Read from the trigger-kept pair counters (``pool/counters.py``); feeds the dashboard chart and every
    rate (counters now minus the snapshot nearest the window start). ``anchor_id``, ``rows_pool`` and
    ``rows_direct`` belonged to the former "id tail since the last snapshot" counting and are no longer
    written (left at 0; kept so that existing rows and the single-app migration test stay valid)."""

    pool = models.ForeignKey("pool.Pool", on_delete=models.CASCADE, related_name="snapshots",
                             db_index=False)
    taken_at = models.DateTimeField()
    available = models.PositiveBigIntegerField()
    reserved = models.PositiveBigIntegerField()
    used = models.PositiveBigIntegerField()
    retired = models.PositiveBigIntegerField()
    reserved_total = models.PositiveBigIntegerField(help_text="Pairs ever handed out (cumulative).")
    reserved_direct = models.PositiveBigIntegerField(default=0, help_text="Of which by the direct fallback.")
    tome_calls_total = models.PositiveBigIntegerField(
        default=0, help_text="TOME calls made for this pool (refill runs + direct fallback), cumulative.")
    anchor_id = models.BigIntegerField(default=0)
    rows_pool = models.PositiveBigIntegerField(default=0)
    rows_direct = models.PositiveBigIntegerField(default=0)

    class Meta:
        db_table = "core_poolsnapshot"
        ordering = ["-taken_at"]
        get_latest_by = "taken_at"
        indexes = [models.Index(fields=["pool", "-taken_at"], name="snapshot_pool_recent_idx")]
        constraints = [
            models.CheckConstraint(name="snapshot_direct_within_total",
                                   condition=Q(reserved_direct__lte=models.F("reserved_total"))),
        ]

    def __str__(self) -> str:
        return f"{self.pool.name} @ {self.taken_at:%Y-%m-%d %H:%M}"


class AlertCondition(TextChoices):
    POOL_LOW = "pool_low", "available below low watermark"
    POOL_CRITICAL = "pool_critical", "available below critical watermark"
    REFILL_FAILING = "refill_failing", "refill failed repeatedly"
    TOME_UNAVAILABLE = "tome_unavailable", "TOME unreachable (circuit open)"
    DIRECT_FALLBACK = "direct_fallback", "reservations served by the direct fallback"


class AlertSeverity(TextChoices):
    WARNING = "warning"
    CRITICAL = "critical"


class PoolAlert(models.Model):
    """One occurrence of a condition on a pool, from when it was seen until it cleared.

    At most one open alert per (pool, condition) — enforced by the database, so two evaluators
    racing cannot open (and notify) twice."""

    pool = models.ForeignKey("pool.Pool", on_delete=models.CASCADE, related_name="alerts", db_index=False)
    condition = models.CharField(max_length=32, choices=AlertCondition.choices)
    severity = models.CharField(max_length=16, choices=AlertSeverity.choices)
    opened_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                        on_delete=models.SET_NULL, related_name="+")
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    last_notified_at = models.DateTimeField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        db_table = "core_poolalert"
        ordering = ["-opened_at"]
        indexes = [models.Index(fields=["pool", "-opened_at"], name="alert_pool_recent_idx")]
        constraints = [
            models.UniqueConstraint(fields=["pool", "condition"], condition=Q(resolved_at__isnull=True),
                                    name="alert_one_open_per_condition"),
            models.CheckConstraint(name="alert_resolved_after_opened",
                                   condition=Q(resolved_at__isnull=True) | Q(resolved_at__gte=models.F("opened_at"))),
        ]

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None

    def __str__(self) -> str:
        return f"{self.get_condition_display()} on {self.pool.name} ({'open' if self.is_open else 'resolved'})"


class PoolConfigChange(models.Model):
    """Who changed which pool tunable from what to what (written by the Pool admin)."""

    pool = models.ForeignKey("pool.Pool", on_delete=models.CASCADE, related_name="config_changes",
                             db_index=False)
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                                   related_name="+")
    changed_at = models.DateTimeField(auto_now_add=True)
    field = models.CharField(max_length=64)
    old = models.CharField(max_length=255, null=True, blank=True)
    new = models.CharField(max_length=255, null=True, blank=True)

    class Meta:
        db_table = "core_poolconfigchange"
        ordering = ["-changed_at", "-id"]
        indexes = [models.Index(fields=["pool", "-changed_at"], name="configchange_pool_recent_idx")]
        verbose_name = "pool configuration change"

    def __str__(self) -> str:
        return f"{self.pool.name} {self.field}: {self.old} → {self.new}"


class ConsumerAdoption(models.Model):
    """A project lead's plan for one consuming team: when it is to move onto the pool (the plan:
    "adoption by consuming teams is a separate effort on each team's schedule")."""

    consumer = models.OneToOneField("keys.Consumer", on_delete=models.CASCADE, primary_key=True,
                                    related_name="adoption")
    planned_adoption_date = models.DateField(null=True, blank=True)
    note = models.CharField(max_length=255, blank=True, default="")
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                                   related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "consumer adoption plan"

    def __str__(self) -> str:
        return f"adoption of {self.consumer.name}: {self.planned_adoption_date or 'unplanned'}"
