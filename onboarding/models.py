# mypy: allow-subclassing-any
# (Django ships no type information and the project runs mypy without django-stubs: models.Model is Any.)
"""Onboarding models: tasks per environment, four-eyes approval decisions and the transition trail.

An ``OnboardingTask`` moves NOT_STARTED → IN_PROGRESS → AWAITING_APPROVAL → APPROVED, or
AWAITING_APPROVAL → REJECTED → IN_PROGRESS. The state field is a protected django-fsm field: the
only way to change it is a transition method, and the only callers of those are the services in
``onboarding.services`` (which add the rules that need a user: four-eyes, approver
permission). ``ApprovalDecision`` and ``OnboardingTransition`` are the audit trail: append-only,
enforced here and by database triggers (see the migration ``onboarding_append_only_triggers``).
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, cast

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django_fsm import FSMField, FSMModelMixin, transition

from common.append_only import AppendOnlyModel
from common.choices import TextChoices
from pool.models import Environment

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser

__all__ = [
    "ApprovalDecision",
    "OnboardingGroup",
    "OnboardingState",
    "OnboardingSummary",
    "OnboardingTask",
    "OnboardingTransition",
]

APPROVE_PERMISSION = "onboarding.approve_onboardingtask"


class OnboardingGroup(TextChoices):
    COMMON = "common", "Common (required regardless of approach)"
    LIBRARY = "library", "Approach 1: JAR/library"
    PREFETCH_BATCH_JOB = "prefetch_batch_job", "Approach 2: prefetch — batch job"
    PREFETCH_APPLICATION = "prefetch_application", "Approach 2: prefetch — application changes"
    PREFETCH_TESTING_DEPLOYMENT = "prefetch_testing_deployment", "Approach 2: prefetch — testing & deployment"
    PREFETCH_POOL_MANAGEMENT = "prefetch_pool_management", "Approach 2: prefetch — pool management"


PREFETCH_GROUPS = (
    OnboardingGroup.PREFETCH_BATCH_JOB,
    OnboardingGroup.PREFETCH_APPLICATION,
    OnboardingGroup.PREFETCH_TESTING_DEPLOYMENT,
    OnboardingGroup.PREFETCH_POOL_MANAGEMENT,
)


class OnboardingState(TextChoices):
    NOT_STARTED = "NOT_STARTED", "Not started"
    IN_PROGRESS = "IN_PROGRESS", "In progress"
    AWAITING_APPROVAL = "AWAITING_APPROVAL", "Awaiting approval"
    APPROVED = "APPROVED", "Approved"
    REJECTED = "REJECTED", "Rejected"


# A transition into one of these states is work on the task (start, submit); its actor may not decide on it.
WORK_STATES = (OnboardingState.IN_PROGRESS, OnboardingState.AWAITING_APPROVAL)


def prerequisites_approved(task: OnboardingTask) -> bool:
    """FSM condition: no transition moves a task forward while a prerequisite is unapproved."""
    return not task.prerequisites.exclude(state=OnboardingState.APPROVED).exists()


class OnboardingTask(FSMModelMixin, models.Model):
    slug = models.SlugField(max_length=100, unique=True, help_text="Stable key from plan.json.")
    title = models.CharField(max_length=200)
    environment = models.CharField(
        max_length=16, choices=Environment.choices, null=True, blank=True,
        help_text="UAT or Production for common tasks; empty for implementation tasks.",
    )
    group = models.CharField(max_length=32, choices=OnboardingGroup.choices)
    position = models.PositiveIntegerField(default=0, help_text="Order in the source plan.")
    description = models.TextField(blank=True, help_text="Comments from the source plan.")
    estimate_days = models.DecimalField(
        max_digits=5, decimal_places=1, null=True, blank=True,
        help_text="Planning estimate of technical effort in working days (approval lead time excluded).",
    )
    optional = models.BooleanField(default=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="owned_onboarding_tasks",
    )
    prerequisites = models.ManyToManyField(
        "self", symmetrical=False, blank=True, related_name="dependents",
    )
    state = FSMField(
        max_length=20, choices=OnboardingState.choices, default=OnboardingState.NOT_STARTED,
        protected=True, db_index=True,
    )
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
        related_name="submitted_onboarding_tasks",
    )
    submitted_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
        related_name="approved_onboarding_tasks",
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "core_onboardingtask"
        ordering = ("position", "id")
        permissions = [("approve_onboardingtask", "Can approve or reject onboarding tasks")]
        constraints = [
            models.CheckConstraint(
                name="onboarding_state_valid", condition=Q(state__in=OnboardingState.values),
            ),
            models.CheckConstraint(
                name="onboarding_group_valid", condition=Q(group__in=OnboardingGroup.values),
            ),
            # Common tasks exist once per environment; implementation tasks are environment-free.
            models.CheckConstraint(
                name="onboarding_environment_matches_group",
                condition=(Q(group=OnboardingGroup.COMMON, environment__in=Environment.values)
                           | (~Q(group=OnboardingGroup.COMMON) & Q(environment__isnull=True))),
            ),
            models.CheckConstraint(
                name="onboarding_estimate_not_negative",
                condition=Q(estimate_days__isnull=True) | Q(estimate_days__gte=0),
            ),
            models.CheckConstraint(
                name="onboarding_awaiting_has_submitter",
                condition=~Q(state=OnboardingState.AWAITING_APPROVAL)
                | Q(submitted_by__isnull=False, submitted_at__isnull=False),
            ),
            # Four-eyes, as a last line behind the services: an approved task names a submitter and
            # a different approver.
            models.CheckConstraint(
                name="onboarding_approved_four_eyes",
                condition=~Q(state=OnboardingState.APPROVED)
                | (Q(approved_by__isnull=False, approved_at__isnull=False,
                     submitted_by__isnull=False, submitted_at__isnull=False)
                   & ~Q(approved_by=F("submitted_by"))),
            ),
            models.CheckConstraint(
                name="onboarding_approver_only_when_approved",
                condition=Q(state=OnboardingState.APPROVED)
                | Q(approved_by__isnull=True, approved_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return cast(str, self.title)

    # --- transitions (called only by onboarding.services, inside its locked transaction) ---

    @transition(field=state, source=[OnboardingState.NOT_STARTED, OnboardingState.REJECTED],
                target=OnboardingState.IN_PROGRESS, conditions=[prerequisites_approved])
    def start(self, *, by: AbstractBaseUser, at: datetime) -> None:
        if self.owner_id is None:
            self.owner = by

    @transition(field=state, source=OnboardingState.IN_PROGRESS,
                target=OnboardingState.AWAITING_APPROVAL, conditions=[prerequisites_approved])
    def submit(self, *, by: AbstractBaseUser, at: datetime) -> None:
        self.submitted_by = by
        self.submitted_at = at

    @transition(field=state, source=OnboardingState.AWAITING_APPROVAL,
                target=OnboardingState.APPROVED, conditions=[prerequisites_approved],
                permission=APPROVE_PERMISSION)
    def approve(self, *, by: AbstractBaseUser, at: datetime) -> None:
        self.approved_by = by
        self.approved_at = at

    @transition(field=state, source=OnboardingState.AWAITING_APPROVAL,
                target=OnboardingState.REJECTED, permission=APPROVE_PERMISSION)
    def reject(self, *, by: AbstractBaseUser, at: datetime) -> None:
        pass

    # --- read helpers ---

    def days_waiting_for_approval(self, *, now: datetime | None = None) -> float | None:
        if self.state != OnboardingState.AWAITING_APPROVAL or self.submitted_at is None:
            return None
        waited: timedelta = (now or timezone.now()) - self.submitted_at
        return waited.total_seconds() / 86400


class ApprovalDecision(AppendOnlyModel):
    class Decision(TextChoices):
        APPROVE = "approve", "Approve"
        REJECT = "reject", "Reject"

    task = models.ForeignKey(OnboardingTask, on_delete=models.PROTECT, related_name="decisions")
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="onboarding_decisions",
    )
    decision = models.CharField(max_length=8, choices=Decision.choices)
    note = models.TextField(blank=True)
    decided_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "core_approvaldecision"
        ordering = ("-decided_at", "-id")
        constraints = [
            models.CheckConstraint(
                name="approval_decision_valid", condition=Q(decision__in=["approve", "reject"]),
            ),
            models.CheckConstraint(
                name="approval_reject_has_note", condition=~Q(decision="reject") | ~Q(note=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_decision_display()} {self.task} by {self.decided_by}"


class OnboardingTransition(AppendOnlyModel):
    task = models.ForeignKey(OnboardingTask, on_delete=models.PROTECT, related_name="transitions")
    from_state = models.CharField(max_length=20, choices=OnboardingState.choices)
    to_state = models.CharField(max_length=20, choices=OnboardingState.choices)
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="onboarding_transitions",
    )
    at = models.DateTimeField(default=timezone.now)
    note = models.TextField(blank=True)

    class Meta:
        db_table = "core_onboardingtransition"
        ordering = ("at", "id")
        indexes = [models.Index(fields=["task", "at"], name="onboarding_transition_task_at")]

    def __str__(self) -> str:
        return f"{self.task}: {self.from_state} → {self.to_state} by {self.by}"


class OnboardingSummary(OnboardingTask):
    """No data of its own: gives the per-environment summary page an entry on the admin index."""

    class Meta:
        proxy = True
        verbose_name = "onboarding readiness summary"
        verbose_name_plural = "onboarding readiness summary"
