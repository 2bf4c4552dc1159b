"""Writes of the onboarding room: the four transitions and loading the plan.

Every transition locks the task row (``select_for_update``), checks the rules, moves the state
through the model's django-fsm transition and appends an ``OnboardingTransition`` (and, for
approve/reject, an ``ApprovalDecision``) in the same transaction, so the audit trail can never
disagree with the state.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import Model
from django.utils import timezone
from django_fsm import TransitionNotAllowed, can_proceed

from onboarding.errors import (
    ApproverPermissionRequired,
    FourEyesViolation,
    NoteRequired,
    OnboardingRuleViolation,
    PrerequisitesNotApproved,
    TransitionNotAllowedFromState,
)
from onboarding.models import (
    APPROVE_PERMISSION,
    WORK_STATES,
    ApprovalDecision,
    OnboardingState,
    OnboardingTask,
    OnboardingTransition,
)

PLAN_PATH = Path(__file__).resolve().parent / "plan.json"

_ACTION_SOURCES = {
    "start": (OnboardingState.NOT_STARTED, OnboardingState.REJECTED),
    "submit": (OnboardingState.IN_PROGRESS,),
    "approve": (OnboardingState.AWAITING_APPROVAL,),
    "reject": (OnboardingState.AWAITING_APPROVAL,),
}


def _check_user(user: AbstractBaseUser) -> None:
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        raise OnboardingRuleViolation("Onboarding actions need an active, signed-in user.")


def _check_source_state(task: OnboardingTask, action: str) -> None:
    allowed = _ACTION_SOURCES[action]
    if task.state not in allowed:
        names = " or ".join(OnboardingState(s).label for s in allowed)
        raise TransitionNotAllowedFromState(
            f"Cannot {action} “{task.title}”: it is {OnboardingState(task.state).label.lower()}, "
            f"and {action} needs {names.lower()}."
        )


def _check_prerequisites(task: OnboardingTask, action: str) -> None:
    # No lock on the prerequisites: APPROVED is terminal, so an approval seen here cannot be undone.
    missing = [p.title for p in task.prerequisites.exclude(state=OnboardingState.APPROVED).order_by("position")]
    if missing:
        raise PrerequisitesNotApproved(
            f"Cannot {action} “{task.title}” before its prerequisites are approved: {', '.join(missing)}.",
            missing=missing,
        )


def _check_approver(task: OnboardingTask, user: AbstractBaseUser, action: str) -> None:
    if not user.has_perm(APPROVE_PERMISSION):
        raise ApproverPermissionRequired(
            f"Cannot {action} “{task.title}”: you do not have the onboarding approver permission."
        )
    if task.submitted_by_id == user.pk or _did_the_work(task, user):
        raise FourEyesViolation(
            f"Cannot {action} “{task.title}”: you started, submitted or changed it; "
            "another approver must decide (four-eyes)."
        )


def _did_the_work(task: OnboardingTask, user: AbstractBaseUser) -> bool:
    """Whether ``user`` is the actor of any transition that did the work (start or submit, in any
    round). A rejection is a decision, not work: the approver who sent a task back may decide again.
    The database trigger ``core_onboardingtask_four_eyes`` enforces the same rule for approvals."""
    return OnboardingTransition.objects.filter(
        task=task, by=user, to_state__in=WORK_STATES,
    ).exists()


def _transition(*, task: OnboardingTask, user: AbstractBaseUser, action: str, note: str = "",
                checks: tuple[Callable[[OnboardingTask], None], ...] = ()) -> OnboardingTask:
    _check_user(user)
    with transaction.atomic():
        locked: OnboardingTask = OnboardingTask.objects.select_for_update(of=("self",)).get(pk=task.pk)
        _check_source_state(locked, action)
        for check in checks:
            check(locked)
        method = getattr(locked, action)
        if not can_proceed(method):  # the FSM's own conditions agree with the checks above
            raise TransitionNotAllowedFromState(f"Cannot {action} “{locked.title}” now.")
        from_state = locked.state
        now = timezone.now()
        try:
            method(by=user, at=now)
        except TransitionNotAllowed as exc:  # pragma: no cover - guarded by the checks above
            raise TransitionNotAllowedFromState(str(exc)) from exc
        locked.save()
        OnboardingTransition.objects.create(
            task=locked, from_state=from_state, to_state=locked.state, by=user, at=now, note=note,
        )
        if action in ("approve", "reject"):
            ApprovalDecision.objects.create(
                task=locked, decided_by=user, decision=action, note=note, decided_at=now,
            )
    return locked


def task_start(*, task: OnboardingTask, user: AbstractBaseUser) -> OnboardingTask:
    """Start (or, after a rejection, restart) work on a task; the starter becomes owner if none.

    Returns the updated task (the instance passed in is not modified)."""
    return _transition(task=task, user=user, action="start",
                       checks=(lambda t: _check_prerequisites(t, "start"),))


def task_submit(*, task: OnboardingTask, user: AbstractBaseUser) -> OnboardingTask:
    """Ask for approval; the submitter is recorded and can no longer decide on it."""
    return _transition(task=task, user=user, action="submit",
                       checks=(lambda t: _check_prerequisites(t, "submit"),))


def task_approve(*, task: OnboardingTask, user: AbstractBaseUser, note: str = "") -> OnboardingTask:
    """Approve a submitted task: approver permission, not the submitter, prerequisites approved."""
    return _transition(
        task=task, user=user, action="approve", note=(note or "").strip(),
        checks=(lambda t: _check_approver(t, user, "approve"), lambda t: _check_prerequisites(t, "approve")),
    )


def task_reject(*, task: OnboardingTask, user: AbstractBaseUser, note: str) -> OnboardingTask:
    """Send a submitted task back to its owner; the note saying why is required."""
    note = (note or "").strip()
    if not note:
        raise NoteRequired()
    return _transition(task=task, user=user, action="reject", note=note,
                       checks=(lambda t: _check_approver(t, user, "reject"),))


def task_drive_to_approved(*, task: OnboardingTask, submitter: AbstractBaseUser, approver: AbstractBaseUser,
                           note: str = "") -> OnboardingTask:
    """Take a task from wherever it stands to APPROVED through the normal four-eyes steps: started and
    submitted by ``submitter``, approved by ``approver``. For demo data and tests; every rule still
    applies, so an unapproved prerequisite raises as it would in the admin."""
    task.refresh_from_db()
    if task.state in (OnboardingState.NOT_STARTED, OnboardingState.REJECTED):
        task = task_start(task=task, user=submitter)
    if task.state == OnboardingState.IN_PROGRESS:
        task = task_submit(task=task, user=submitter)
    if task.state == OnboardingState.AWAITING_APPROVAL:
        task = task_approve(task=task, user=approver, note=note)
    return task


# --- the plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanLoadResult:
    created: int
    updated: int
    unchanged: int

    @property
    def total(self) -> int:
        return self.created + self.updated + self.unchanged


_PLAN_FIELDS = ("title", "environment", "group", "position", "description", "estimate_days", "optional")


def plan_read(*, path: Path = PLAN_PATH) -> list[dict[str, Any]]:
    """The plan's tasks in order, each with ``slug``, the plan fields and ``prerequisites`` (slugs)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    tasks = []
    for position, raw in enumerate(data["tasks"], start=1):
        estimate = raw.get("estimate_days")
        tasks.append({
            "slug": raw["slug"],
            "title": raw["title"],
            "environment": raw.get("environment"),
            "group": raw["group"],
            "position": position,
            "description": raw.get("description", ""),
            "estimate_days": None if estimate is None else Decimal(str(estimate)),
            "optional": bool(raw.get("optional", False)),
            "prerequisites": list(raw.get("prerequisites", [])),
        })
    slugs = [t["slug"] for t in tasks]
    if len(slugs) != len(set(slugs)):
        raise ValueError("plan.json: duplicate slug")
    unknown = {p for t in tasks for p in t["prerequisites"]} - set(slugs)
    if unknown:
        raise ValueError(f"plan.json: unknown prerequisite slugs {sorted(unknown)}")
    return tasks


def plan_load(*, path: Path = PLAN_PATH, task_model: type[Model] | None = None) -> PlanLoadResult:
    """Create or update every task of the plan by slug; a second run changes nothing.

    The plan is authoritative for what it defines (title, environment, group, order, comments,
    estimate, optional flag, prerequisites); owner, state and the approval trail are never touched,
    and tasks no longer in the plan are left alone. ``task_model`` lets the data migration pass its
    historical model."""
    model = task_model or OnboardingTask
    plan = plan_read(path=path)
    created = updated = unchanged = 0
    with transaction.atomic():
        existing = {t.slug: t for t in model.objects.filter(slug__in=[p["slug"] for p in plan])}
        by_slug = {}
        changed_slugs = set()
        for item in plan:
            values = {f: item[f] for f in _PLAN_FIELDS}
            task = existing.get(item["slug"])
            if task is None:
                task = model.objects.create(slug=item["slug"], **values)
                created += 1
                changed_slugs.add(item["slug"])
            else:
                dirty = [f for f, v in values.items() if getattr(task, f) != v]
                if dirty:
                    for f in dirty:
                        setattr(task, f, values[f])
                    task.save(update_fields=[*dirty, "updated_at"])
                    changed_slugs.add(item["slug"])
            by_slug[item["slug"]] = task
        for item in plan:
            task = by_slug[item["slug"]]
            wanted = {by_slug[s].pk for s in item["prerequisites"]}
            current = set(task.prerequisites.values_list("pk", flat=True))
            if wanted != current:
                task.prerequisites.set(wanted)
                changed_slugs.add(item["slug"])
        for item in plan:
            if item["slug"] in existing:
                if item["slug"] in changed_slugs:
                    updated += 1
                else:
                    unchanged += 1
    return PlanLoadResult(created=created, updated=updated, unchanged=unchanged)
