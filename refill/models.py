# mypy: allow-subclassing-any
# (Django ships no type information and the project runs mypy without django-stubs: models.Model is Any.)
"""Refill runs: one row per attempt to top a pool up from TOME (scheduled, on demand or manual)."""
from __future__ import annotations

from django.db import models
from django.db.models import Q

from common.choices import TextChoices

__all__ = ["RefillTrigger", "RefillOutcome", "RefillRun", "RefillLease"]


class RefillTrigger(TextChoices):
    SCHEDULED = "scheduled"
    LOW_WATERMARK = "low_watermark", "low watermark"
    MANUAL = "manual"
    STARTUP = "startup"


class RefillOutcome(TextChoices):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    NOTHING_TO_DO = "nothing_to_do", "nothing to do"
    PARTIAL = "partial"  # ended early (time budget) after inserting some batches
    FAILED = "failed"
    BLOCKED_ONBOARDING = "blocked_onboarding", "blocked by onboarding"
    SKIPPED_LOCKED = "skipped_locked", "skipped: another refill was running"


class RefillRun(models.Model):
    pool = models.ForeignKey("pool.Pool", on_delete=models.PROTECT, related_name="refill_runs")
    trigger = models.CharField(max_length=16, choices=RefillTrigger.choices)
    outcome = models.CharField(max_length=24, choices=RefillOutcome.choices, default=RefillOutcome.RUNNING)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    requested = models.PositiveIntegerField(default=0)
    inserted = models.PositiveIntegerField(default=0)
    tome_calls = models.PositiveIntegerField(default=0)
    tome_seconds = models.FloatField(default=0.0)
    db_seconds = models.FloatField(default=0.0)
    error = models.TextField(blank=True, default="")
    correlation_id = models.CharField(max_length=128, blank=True, default="")

    class Meta:
        db_table = "core_refillrun"
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["pool", "-started_at"], name="refillrun_pool_recent_idx")]
        constraints = [
            models.CheckConstraint(
                name="refillrun_finished_iff_not_running",
                condition=(Q(outcome="running") & Q(finished_at__isnull=True))
                | (~Q(outcome="running") & Q(finished_at__isnull=False)),
            ),
            models.CheckConstraint(name="refillrun_inserted_le_requested_or_zero",
                                   condition=Q(inserted__lte=models.F("requested"))),
        ]

    def __str__(self) -> str:
        return f"refill #{self.pk} of {self.pool.name}: {self.get_outcome_display()}"


class RefillLease(models.Model):
    """"A refill of this pool is queued or running": the de-duplication marker of on-demand refills.

    At most one row per pool (the primary key is the pool). A trigger enqueues a refill only when it
    wins the row with a single ``INSERT … ON CONFLICT … WHERE expires_at < now()``; the refill that
    runs keeps the row alive while it works and deletes it when it ends. Every row expires, so a
    marker left behind by a killed worker or a lost queue message blocks on-demand refills for at
    most ``expires_at - now()`` and never forever (see docs/refill.md)."""

    pool = models.OneToOneField("pool.Pool", on_delete=models.CASCADE, primary_key=True,
                                related_name="refill_lease")
    token = models.UUIDField(help_text="Identifies the queued task (or running refill) holding the lease.")
    state = models.CharField(max_length=8, choices=[("queued", "queued"), ("running", "running"),
                                                    ("cooldown", "cooldown after a failure")])
    acquired_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    task_id = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        db_table = "core_refilllease"
        constraints = [
            models.CheckConstraint(name="refilllease_expires_after_acquired",
                                   condition=Q(expires_at__gt=models.F("acquired_at"))),
            models.CheckConstraint(name="refilllease_state_known",
                                   condition=Q(state__in=["queued", "running", "cooldown"])),
        ]

    def __str__(self) -> str:
        return f"refill lease of {self.pool.name}: {self.state} until {self.expires_at:%H:%M:%S}"
