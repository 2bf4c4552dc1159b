"""Reads of the onboarding room: the per-environment summary shown in the admin."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from django.utils import timezone

from onboarding.models import (
    PREFETCH_GROUPS,
    WORK_STATES,
    OnboardingGroup,
    OnboardingState,
    OnboardingTask,
    OnboardingTransition,
)
from onboarding.readiness import missing_approvals
from onboarding.services import PLAN_PATH
from onboarding.signals import impact_measurement_requested
from pool.models import Environment

logger = logging.getLogger(__name__)

# The original plan: "Process/approvals for UAT and Production environments may take 1-2 weeks".
APPROVAL_EXPECTED_DAYS = (7, 14)


@dataclass
class TaskRow:
    task: OnboardingTask
    blocked_by: list[OnboardingTask] = field(default_factory=list)  # direct, not approved
    root_blockers: list[OnboardingTask] = field(default_factory=list)  # actionable now
    days_waiting: float | None = None

    @property
    def days_waiting_display(self) -> str:
        return "—" if self.days_waiting is None else f"{self.days_waiting:.1f}"

    @property
    def waiting_flag(self) -> str:
        if self.days_waiting is None:
            return ""
        if self.days_waiting > APPROVAL_EXPECTED_DAYS[1]:
            return "over the plan's 2-week approval window"
        if self.days_waiting > APPROVAL_EXPECTED_DAYS[0]:
            return "within the plan's 1–2 week window"
        return ""


def _task_graph() -> tuple[dict[int, OnboardingTask], dict[int, list[int]]]:
    tasks = {t.pk: t for t in OnboardingTask.objects.select_related("owner", "submitted_by", "approved_by")}
    prereqs: dict[int, list[int]] = {pk: [] for pk in tasks}
    through = OnboardingTask.prerequisites.through
    for from_id, to_id in through.objects.values_list("from_onboardingtask_id", "to_onboardingtask_id"):
        prereqs[from_id].append(to_id)
    return tasks, prereqs


def _rows(tasks: dict[int, OnboardingTask], prereqs: dict[int, list[int]], selected: list[OnboardingTask],
          now: datetime) -> list[TaskRow]:
    def unapproved(pk: int) -> list[int]:
        return sorted((p for p in prereqs[pk] if tasks[p].state != OnboardingState.APPROVED),
                      key=lambda p: tasks[p].position)

    def roots(pk: int) -> list[OnboardingTask]:
        found, seen, stack = [], set(), list(unapproved(pk))
        while stack:
            cur = stack.pop()
            if cur in seen:
                continue
            seen.add(cur)
            deeper = unapproved(cur)
            if deeper:
                stack.extend(deeper)
            else:
                found.append(tasks[cur])
        return sorted(found, key=lambda t: t.position)

    rows = []
    for task in selected:
        row = TaskRow(task=task, days_waiting=task.days_waiting_for_approval(now=now))
        if task.state != OnboardingState.APPROVED:
            row.blocked_by = [tasks[p] for p in unapproved(task.pk)]
            row.root_blockers = roots(task.pk) if row.blocked_by else []
        rows.append(row)
    return rows


def _days(value: Decimal | None) -> Decimal:
    return value if value is not None else Decimal("0")


def estimate_totals() -> list[dict[str, Any]]:
    """Estimate sums per approach (common / library / prefetch), total and still to do."""
    approaches = [
        ("Common (both environments)", (OnboardingGroup.COMMON,)),
        ("Approach 1: JAR/library", (OnboardingGroup.LIBRARY,)),
        ("Approach 2: prefetch + DB", PREFETCH_GROUPS),
    ]
    out = []
    for label, groups in approaches:
        tasks = list(OnboardingTask.objects.filter(group__in=groups))
        parts = []
        for group in groups:
            in_group = [t for t in tasks if t.group == group]
            parts.append({
                "label": OnboardingGroup(group).label,
                "count": len(in_group),
                "days": sum((_days(t.estimate_days) for t in in_group), Decimal("0")),
            })
        out.append({
            "label": label,
            "count": len(tasks),
            "days": sum((_days(t.estimate_days) for t in tasks), Decimal("0")),
            "days_required": sum((_days(t.estimate_days) for t in tasks if not t.optional), Decimal("0")),
            "days_remaining": sum((_days(t.estimate_days) for t in tasks
                                   if t.state != OnboardingState.APPROVED), Decimal("0")),
            "unestimated": sum(1 for t in tasks if t.estimate_days is None),
            "parts": parts if len(groups) > 1 else [],
        })
    return out


def _measured_prefetch_calls() -> tuple[int, float] | None:
    """The first answer to ``impact_measurement_requested`` (the monitoring room's counters)."""
    for _receiver, answer in impact_measurement_requested.send(sender=OnboardingTask):
        if answer is not None:
            return cast(tuple[int, float], answer)
    return None


def tome_call_impact(*, cards_per_day: int = 50_000,
                     measure: Callable[[], tuple[int, int] | None] | None = None) -> dict[str, Any]:
    """The original plan's "impact at 50K cards/day": TOME calls per day, JAR approach vs prefetch.

    The one place where live counters feed the comparison. JAR: every card is created (NS1 + NS2
    tokenize = 2 calls) and detokenized (NS2 lookup + NS1 detokenize = 2 calls). Prefetch, as the
    original plan counts it: 1 call per card for its share of the batch prefetch plus 1 NS1 detokenize after
    the database lookup ("projected"). When this deployment has issued cards, the measured row
    scales its real TOME HTTP calls per card (batch calls count once) to ``cards_per_day``."""
    model = json.loads(PLAN_PATH.read_text(encoding="utf-8"))["impact_at_50k_cards_per_day"]
    jar_per_card = sum(model["jar_calls_per_card"].values())
    prefetch_per_card = sum(model["prefetch_calls_per_card"].values())
    jar = jar_per_card * cards_per_day
    prefetch = prefetch_per_card * cards_per_day
    impact: dict[str, Any] = {
        "basis": "projected",
        "cards_per_day": cards_per_day,
        "jar_calls_per_card": jar_per_card,
        "prefetch_calls_per_card": prefetch_per_card,
        "jar_calls_per_day": jar,
        "prefetch_calls_per_day": prefetch,
        "calls_saved_per_day": jar - prefetch,
        "reduction_percent": round(100 * (jar - prefetch) / jar, 1) if jar else 0.0,
        "source": (f"the original plan's count: {jar_per_card} TOME calls per card on the live path "
                   f"(create NS1 + NS2, detokenize NS2 + NS1), {prefetch_per_card} with prefetch"),
        "measured": None,
    }
    try:
        measured = (measure or _measured_prefetch_calls)()
    except Exception:  # another room's counters must not take the onboarding summary down
        logger.warning("onboarding_impact_measurement_failed", exc_info=True)
        measured = None
    if measured and measured[0] > 0:
        cards, calls = measured
        per_card = calls / cards
        per_day = round(per_card * cards_per_day)
        impact["basis"] = "projected and measured"
        impact["measured"] = {
            "cards_issued": cards,
            "tome_calls": round(calls, 2),
            "calls_per_card": round(per_card, 4),
            "calls_per_day": per_day,
            "reduction_percent": round(100 * (jar - per_day) / jar, 1) if jar else 0.0,
        }
    return impact


def environment_summary(*, environment: str, now: datetime | None = None) -> dict[str, Any]:
    """Everything the admin summary page shows for one environment."""
    env = Environment(environment.upper())
    now = now or timezone.now()
    tasks, prereqs = _task_graph()
    ordered = sorted(tasks.values(), key=lambda t: (t.position, t.pk))
    common = [t for t in ordered if t.group == OnboardingGroup.COMMON and t.environment == env]
    implementation = [t for t in ordered if t.group != OnboardingGroup.COMMON]
    common_rows = _rows(tasks, prereqs, common, now)
    impl_rows = _rows(tasks, prereqs, implementation, now)
    waiting = sorted((r for r in common_rows + impl_rows if r.days_waiting is not None),
                     key=lambda r: -cast(float, r.days_waiting))
    return {
        "environment": env,
        "environment_label": env.label,
        "approved": sum(1 for t in common if t.state == OnboardingState.APPROVED),
        "total": len(common),
        "missing": missing_approvals(environment=env),
        "common_rows": common_rows,
        "blocked_rows": [r for r in common_rows + impl_rows if r.blocked_by],
        "waiting_rows": waiting,
        "implementation_approved": sum(1 for t in implementation if t.state == OnboardingState.APPROVED),
        "implementation_total": len(implementation),
        "estimates": estimate_totals(),
        "impact": tome_call_impact(),
        "approval_expected_days": APPROVAL_EXPECTED_DAYS,
    }


def four_eyes_conflicts(*, tasks: list[OnboardingTask], user: Any) -> list[OnboardingTask]:
    """The tasks ``user`` may not approve or reject: they submitted or did work on them (four-eyes).
    The admin refuses these before showing the decision form; the services refuse them again."""
    worked = set(OnboardingTransition.objects.filter(task__in=tasks, by=user, to_state__in=WORK_STATES)
                 .values_list("task_id", flat=True))
    return [t for t in tasks if t.submitted_by_id == user.pk or t.pk in worked]
