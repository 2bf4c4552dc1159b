"""Go-live projection (a selector): when will UAT and Production be ready, likely and late.

Time runs in *working days* counted from the projection's start date (day 0 = the first working day
on or after it); Saturdays, Sundays and ``settings.ONBOARDING_HOLIDAYS`` are skipped. Each task is
placed by the critical-path method over the prerequisite graph:

- APPROVED: done at its approval date (its history, not the plan, decides).
- AWAITING_APPROVAL: technical work done at submission; approved one approval lead time later (never
  before today; waiting longer than the lead time marks it *late*).
- IN_PROGRESS: work started at its last start transition; done ``estimate`` days later (never before
  today; running past its estimate marks it *late*), then the approval lead time.
- NOT_STARTED / REJECTED: starts when its last prerequisite is projected approved (never before
  today; a task whose prerequisites were all approved before today and that is still not started is
  *late*), takes its estimate, then the approval lead time.

The *late* bound multiplies remaining estimates by ``settings.ONBOARDING_LATE_EFFORT_FACTOR`` and uses
the late approval lead time. Approval lead time applies to the environment (common) tasks only, the
approvals the plan warns about ("may take 1-2 weeks"); implementation tasks are reviewed in the team.
Lead times default to ``settings.ONBOARDING_APPROVAL_LEAD_DAYS`` and are replaced by the observed
submit → approve durations of this deployment's approved environment tasks once there are any
(likely = median, late = the longest seen, per environment, else over both environments).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.conf import settings
from django.utils import timezone

from onboarding.models import OnboardingGroup, OnboardingState, OnboardingTask, OnboardingTransition
from onboarding.signals import pool_fill_requested
from pool.models import Environment

__all__ = [
    "EnvironmentProjection",
    "LeadTime",
    "Projection",
    "TaskProjection",
    "WorkCalendar",
    "go_live_projection",
    "pool_readiness",
]

SCENARIOS = ("likely", "late")


@dataclass(frozen=True)
class WorkCalendar:
    """Working days: Monday–Friday except ``holidays``; index 0 is the first working day ≥ ``start``."""

    start: date
    holidays: frozenset[date] = frozenset()

    def is_working(self, day: date) -> bool:
        return day.weekday() < 5 and day not in self.holidays

    @property
    def origin(self) -> date:
        day = self.start
        while not self.is_working(day):
            day += timedelta(days=1)
        return day

    def day(self, index: int) -> date:
        """The working day ``index`` working days after the origin (negative: before it)."""
        day, step = self.origin, (1 if index >= 0 else -1)
        remaining = abs(index)
        while remaining:
            day += timedelta(days=step)
            if self.is_working(day):
                remaining -= 1
        return day

    def index(self, day: date) -> int:
        """Working days from the origin to ``day`` (a non-working day counts as the next working day)."""
        origin = self.origin
        lo, hi, step = (origin, day, 1) if day >= origin else (day, origin, -1)
        count, cur = 0, lo
        while cur < hi:
            if self.is_working(cur):
                count += 1
            cur += timedelta(days=1)
        return count * step

    def start_date(self, offset: float) -> date:
        return self.day(math.floor(offset))

    def end_date(self, offset: float) -> date:
        """Date on which work ending at ``offset`` finishes (end of that working day)."""
        return self.day(math.ceil(offset) - 1)


@dataclass(frozen=True)
class LeadTime:
    likely: float
    late: float
    basis: str  # "default (plan: 1-2 weeks)" or "observed: N approvals"
    observations: int = 0

    def get(self, scenario: str) -> float:
        return self.likely if scenario == "likely" else self.late


@dataclass
class TaskProjection:
    task: OnboardingTask
    lead: float = 0.0  # approval lead time, likely scenario
    lead_late: float = 0.0
    start: dict[str, float] = field(default_factory=dict)  # working-day offsets per scenario
    end: dict[str, float] = field(default_factory=dict)
    driver: int | None = None  # prerequisite whose finish set the likely start
    late_reason: str = ""
    critical: bool = False
    dates: dict[str, tuple[date, date]] = field(default_factory=dict)  # scenario -> (start, end)

    @property
    def likely_end(self) -> date:
        return self.dates["likely"][1]

    @property
    def late_end(self) -> date:
        return self.dates["late"][1]


@dataclass
class EnvironmentProjection:
    environment: str
    likely: date
    late: date
    critical_path: list[TaskProjection]
    tasks: list[TaskProjection]
    lead: LeadTime

    @property
    def label(self) -> str:
        """The environment as people read it ("Production"), not its stored value."""
        return str(Environment(self.environment).label)

    def as_json(self) -> dict[str, object]:
        return {"likely": self.likely.isoformat(), "late": self.late.isoformat(),
                "critical_path": [t.task.title for t in self.critical_path]}


@dataclass
class Projection:
    calendar: WorkCalendar
    today: date
    environments: dict[str, EnvironmentProjection]
    tasks: dict[int, TaskProjection]
    late_factor: float

    def as_json(self) -> dict[str, object]:
        return {env: p.as_json() for env, p in self.environments.items()}

    def late_tasks(self) -> list[TaskProjection]:
        return sorted((t for t in self.tasks.values() if t.late_reason), key=lambda t: t.task.position)


def _local_date(value: datetime) -> date:
    return timezone.localdate(value) if timezone.is_aware(value) else value.date()


def _observed_approval_days(calendar: WorkCalendar) -> dict[str, list[float]]:
    """Working days from the last submission to the approval, per environment, of approved tasks."""
    approved = OnboardingTask.objects.filter(state=OnboardingState.APPROVED, group=OnboardingGroup.COMMON,
                                             submitted_at__isnull=False, approved_at__isnull=False)
    out: dict[str, list[float]] = {}
    for env, submitted, approved_at in approved.values_list("environment", "submitted_at", "approved_at"):
        days = calendar.index(_local_date(approved_at)) - calendar.index(_local_date(submitted))
        out.setdefault(env, []).append(float(max(days, 0)))
    return out


def _lead_times(calendar: WorkCalendar) -> dict[str, LeadTime]:
    likely, late = settings.ONBOARDING_APPROVAL_LEAD_DAYS
    default = LeadTime(likely=float(likely), late=float(late), basis="default (the plan's 1-2 weeks)")
    observed = _observed_approval_days(calendar)
    everywhere = [d for days in observed.values() for d in days]
    leads = {}
    for env in Environment.values:
        sample = observed.get(env) or everywhere
        if not sample:
            leads[env] = default
            continue
        median = float(statistics.median(sample))
        where = f"in {env}" if env in observed else "in all environments"
        leads[env] = LeadTime(likely=median, late=max(max(sample), median), observations=len(sample),
                              basis=f"observed: {len(sample)} approval(s) {where}")
    return leads


def _started_at() -> dict[int, datetime]:
    rows = OnboardingTransition.objects.filter(to_state=OnboardingState.IN_PROGRESS).values_list("task_id", "at")
    out: dict[int, datetime] = {}
    for task_id, at in rows:
        if task_id not in out or at > out[task_id]:
            out[task_id] = at
    return out


def _topological(tasks: dict[int, OnboardingTask], prereqs: dict[int, list[int]]) -> list[int]:
    order: list[int] = []
    seen: set[int] = set()

    def visit(pk: int) -> None:
        if pk in seen:
            return
        seen.add(pk)
        for p in prereqs.get(pk, []):
            visit(p)
        order.append(pk)

    for pk in sorted(tasks, key=lambda k: (tasks[k].position, k)):
        visit(pk)
    return order


@dataclass
class _Context:
    calendar: WorkCalendar
    today_index: int
    late_factor: float
    started: dict[int, datetime]
    prereqs: dict[int, list[int]]
    out: dict[int, TaskProjection]


def _estimate(task: OnboardingTask, scenario: str, factor: float) -> float:
    days = float(task.estimate_days or 0)
    return days * factor if scenario == "late" else days


def _place(ctx: _Context, tp: TaskProjection, scenario: str) -> str:
    """Set ``tp.start/end[scenario]``; return a late reason (likely scenario only) or ''."""
    task, cal, now = tp.task, ctx.calendar, ctx.today_index
    if task.state == OnboardingState.APPROVED and task.approved_at:
        end = float(cal.index(_local_date(task.approved_at)) + 1)
        tp.start[scenario], tp.end[scenario] = end - float(task.estimate_days or 0) - tp.lead, end
        return ""
    if task.state == OnboardingState.AWAITING_APPROVAL and task.submitted_at:
        submitted = float(cal.index(_local_date(task.submitted_at)) + 1)
        planned = submitted + _lead(tp, scenario)
        tp.start[scenario], tp.end[scenario] = submitted - float(task.estimate_days or 0), max(planned, now + 1.0)
        return "waiting for approval longer than the lead time" if planned < now + 1 else ""
    ready = max([ctx.out[p].end[scenario] for p in ctx.prereqs.get(task.pk, [])] + [float(now)])
    if task.state == OnboardingState.IN_PROGRESS and task.pk in ctx.started:
        begun = float(cal.index(_local_date(ctx.started[task.pk])))
        work_end = begun + _estimate(task, scenario, ctx.late_factor)
        tp.start[scenario] = begun
        tp.end[scenario] = max(work_end, now + 1.0) + _lead(tp, scenario)
        return "in progress past its estimate" if work_end < now + 1 else ""
    tp.start[scenario] = ready
    tp.end[scenario] = ready + _estimate(task, scenario, ctx.late_factor) + _lead(tp, scenario)
    prereq_done = max([ctx.out[p].end[scenario] for p in ctx.prereqs.get(task.pk, [])] + [-math.inf])
    if ctx.prereqs.get(task.pk) and prereq_done < now and task.state != OnboardingState.IN_PROGRESS:
        return f"could have started on {cal.start_date(prereq_done).isoformat()}, not started"
    return ""


def _lead(tp: TaskProjection, scenario: str) -> float:
    return tp.lead if scenario == "likely" else tp.lead_late


def _driver(ctx: _Context, pk: int) -> int | None:
    prereqs = ctx.prereqs.get(pk, [])
    if not prereqs:
        return None
    best = max(prereqs, key=lambda p: (ctx.out[p].end["likely"], -ctx.out[p].task.position))
    # Only a prerequisite that actually held the task back is on the critical path.
    return best if ctx.out[best].end["likely"] >= ctx.out[pk].start["likely"] else None


def _environment(ctx: _Context, env: str, lead: LeadTime) -> EnvironmentProjection:
    common = [tp for tp in ctx.out.values()
              if tp.task.group == OnboardingGroup.COMMON and tp.task.environment == env]
    common.sort(key=lambda tp: tp.task.position)
    if not common:
        today = ctx.calendar.day(ctx.today_index)
        return EnvironmentProjection(env, today, today, [], [], lead)
    last = max(common, key=lambda tp: (tp.end["likely"], tp.task.position))
    path, cur = [], last.task.pk
    while cur is not None:
        path.append(ctx.out[cur])
        cur = ctx.out[cur].driver
    path.reverse()
    for tp in path:
        tp.critical = True
    return EnvironmentProjection(
        environment=env,
        likely=max(tp.likely_end for tp in common),
        late=max(tp.late_end for tp in common),
        critical_path=path, tasks=common, lead=lead,
    )


def _span(calendar: WorkCalendar, start: float, end: float) -> tuple[date, date]:
    first = calendar.start_date(start)
    return first, max(first, calendar.end_date(end))


def _calendar(start: date) -> WorkCalendar:
    holidays = frozenset(date.fromisoformat(str(d).strip()) for d in settings.ONBOARDING_HOLIDAYS if str(d).strip())
    return WorkCalendar(start=start, holidays=holidays)


def _graph() -> tuple[dict[int, OnboardingTask], dict[int, list[int]]]:
    tasks = {t.pk: t for t in OnboardingTask.objects.select_related("owner")}
    prereqs: dict[int, list[int]] = {pk: [] for pk in tasks}
    through = OnboardingTask.prerequisites.through
    for from_id, to_id in through.objects.values_list("from_onboardingtask_id", "to_onboardingtask_id"):
        prereqs[from_id].append(to_id)
    return tasks, prereqs


def go_live_projection(*, start: date | None = None, environments: Iterable[str] | None = None) -> Projection:
    """Project every task and the ready date of each environment (see the module docstring)."""
    today = start or timezone.localdate()
    calendar = _calendar(today)
    tasks, prereqs = _graph()
    leads = _lead_times(calendar)
    ctx = _Context(calendar=calendar, today_index=0, late_factor=float(settings.ONBOARDING_LATE_EFFORT_FACTOR),
                   started=_started_at(), prereqs=prereqs, out={})
    for pk in _topological(tasks, prereqs):
        task = tasks[pk]
        lead = leads.get(task.environment or "") if task.group == OnboardingGroup.COMMON else None
        tp = TaskProjection(task=task, lead=lead.likely if lead else 0.0, lead_late=lead.late if lead else 0.0)
        ctx.out[pk] = tp
        for scenario in SCENARIOS:
            reason = _place(ctx, tp, scenario)
            if scenario == "likely":
                tp.late_reason = reason
        tp.dates = {s: _span(calendar, tp.start[s], tp.end[s]) for s in SCENARIOS}
        tp.driver = _driver(ctx, pk)
    envs = list(environments or Environment.values)
    return Projection(
        calendar=calendar, today=today, tasks=ctx.out, late_factor=ctx.late_factor,
        environments={env: _environment(ctx, env, leads[env]) for env in envs},
    )


def pool_readiness(*, projection: EnvironmentProjection) -> list[dict[str, object]]:
    """Each pool of the environment: the gate opens on the projected dates, then refills fill the target
    at the pool's measured refill speed (asked of the monitoring room through ``pool_fill_requested``)."""
    rows: list[dict[str, object]] = []
    for _receiver, answer in pool_fill_requested.send(sender=OnboardingTask, environment=projection.environment):
        for pool in answer or []:
            missing = max(int(pool["target"]) - int(pool["available"]), 0)
            rate = pool["pairs_per_hour"]
            hours = None if rate is None else missing / float(rate)
            rows.append({**pool, "missing": missing, "hours_to_fill": hours,
                         "likely": projection.likely, "late": projection.late})
    return rows
