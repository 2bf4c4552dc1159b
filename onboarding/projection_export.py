"""The go-live projection as text: CSV rows, an iCalendar file, and the Gantt chart's geometry.

Pure functions of a :class:`onboarding.projection.Projection`; the admin views and
``manage.py onboarding_projection`` only translate.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from onboarding.models import OnboardingState
from onboarding.projection import Projection, TaskProjection

__all__ = ["GanttChart", "GanttRow", "projection_csv", "projection_gantt", "projection_ical"]

CSV_HEADER = ["environment", "task", "state", "owner", "estimate_days", "approval_lead_days", "prerequisites",
              "likely_start", "likely_end", "late_start", "late_end", "critical", "late"]


def _prereq_titles(projection: Projection, tp: TaskProjection) -> str:
    return "; ".join(p.title for p in tp.task.prerequisites.all())


def projection_csv(*, projection: Projection) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    for tp in sorted(projection.tasks.values(), key=lambda t: (t.task.position, t.task.pk)):
        task = tp.task
        writer.writerow([
            task.environment or "", task.title, OnboardingState(task.state).label, task.owner or "",
            "" if task.estimate_days is None else f"{task.estimate_days:g}", f"{tp.lead:g}/{tp.lead_late:g}",
            _prereq_titles(projection, tp),
            tp.dates["likely"][0].isoformat(), tp.dates["likely"][1].isoformat(),
            tp.dates["late"][0].isoformat(), tp.dates["late"][1].isoformat(),
            "yes" if tp.critical else "", tp.late_reason,
        ])
    for env, ep in projection.environments.items():
        writer.writerow([env, f"{ep.label} ready (all common tasks approved)", "", "", "", "", "",
                         ep.likely.isoformat(), ep.likely.isoformat(), ep.late.isoformat(), ep.late.isoformat(),
                         "", ""])
    return out.getvalue()


def _ics_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def _event(uid: str, summary: str, first: date, last: date, description: str, stamp: str) -> list[str]:
    return ["BEGIN:VEVENT", f"UID:{uid}@tokenpool", f"DTSTAMP:{stamp}",
            f"DTSTART;VALUE=DATE:{first:%Y%m%d}", f"DTEND;VALUE=DATE:{last + timedelta(days=1):%Y%m%d}",
            f"SUMMARY:{_ics_text(summary)}", f"DESCRIPTION:{_ics_text(description)}", "END:VEVENT"]


def projection_ical(*, projection: Projection, now: datetime) -> str:
    """All-day events: each unapproved task's likely span, and each environment's likely/late ready day."""
    stamp = f"{now:%Y%m%dT%H%M%SZ}"
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//TokenPool//Onboarding projection//EN",
             "CALSCALE:GREGORIAN", "X-WR-CALNAME:TokenPool go-live projection"]
    for tp in sorted(projection.tasks.values(), key=lambda t: (t.task.position, t.task.pk)):
        if tp.task.state == OnboardingState.APPROVED:
            continue
        first, last = tp.dates["likely"]
        note = f"Late bound {tp.late_end.isoformat()}." + (" On the critical path." if tp.critical else "")
        lines += _event(f"task-{tp.task.slug}", tp.task.title, first, last, note, stamp)
    for env, ep in projection.environments.items():
        lines += _event(f"ready-{env.lower()}-likely", f"{ep.label} ready (likely)", ep.likely, ep.likely,
                        f"Late bound {ep.late.isoformat()}; approval lead time: {ep.lead.basis}.", stamp)
        lines += _event(f"ready-{env.lower()}-late", f"{ep.label} ready (late bound)", ep.late, ep.late,
                        f"Likely {ep.likely.isoformat()}.", stamp)
    lines.append("END:VCALENDAR")
    return "\r\n".join(lines) + "\r\n"


@dataclass
class GanttRow:
    label: str
    environment: str
    y: int
    likely_x: float
    likely_w: float
    late_w: float  # extension from the likely end to the late end
    late_x: float
    critical: bool
    late: bool
    approved: bool
    title: str


@dataclass
class GanttChart:
    width: int
    height: int
    left: int
    rows: list[GanttRow]
    ticks: list[tuple[float, str]]
    today_x: float
    milestones: list[tuple[float, float, int, str]]  # likely x, late x, y, label


ROW_HEIGHT = 22
LEFT = 260
PLOT_WIDTH = 620


def projection_gantt(*, projection: Projection) -> GanttChart:
    """Geometry of the timeline: one bar per common task of each environment (likely, late extension)."""
    envs = list(projection.environments.values())
    tasks = [tp for ep in envs for tp in ep.tasks]
    first = min([tp.dates["likely"][0] for tp in tasks] + [projection.today])
    last = max([ep.late for ep in envs] + [projection.today])
    span = max((last - first).days + 1, 7)
    scale = PLOT_WIDTH / span

    def x(day: date) -> float:
        return LEFT + (day - first).days * scale

    rows: list[GanttRow] = []
    milestones = []
    y = 30
    for ep in envs:
        for tp in ep.tasks:
            start, likely_end = tp.dates["likely"]
            likely_w = max(x(likely_end) - x(start) + scale, 3)
            rows.append(GanttRow(
                label=tp.task.title if len(tp.task.title) <= 38 else tp.task.title[:37] + "…",
                environment=ep.environment, y=y, likely_x=x(start),
                likely_w=likely_w, late_w=max(x(tp.late_end) - x(likely_end), 0), late_x=x(start) + likely_w,
                critical=tp.critical, late=bool(tp.late_reason),
                approved=tp.task.state == OnboardingState.APPROVED,
                title=f"{tp.task.title}: {start} → {likely_end} (late {tp.late_end})",
            ))
            y += ROW_HEIGHT
        milestones.append((x(ep.likely) + scale, x(ep.late) + scale, y, f"{ep.label} ready"))
        y += ROW_HEIGHT + 8
    step = 7 if span <= 70 else 14 if span <= 140 else 28
    ticks = [(x(first + timedelta(days=d)), f"{first + timedelta(days=d):%b %d}") for d in range(0, span + 1, step)]
    return GanttChart(width=LEFT + PLOT_WIDTH + 20, height=y + 10, left=LEFT, rows=rows, ticks=ticks,
                      today_x=x(projection.today), milestones=milestones)
