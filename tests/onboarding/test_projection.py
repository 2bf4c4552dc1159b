"""Go-live projection: working-day calendar, critical path, states, observed approval lead times."""
from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from onboarding.models import OnboardingTask
from onboarding.projection import WorkCalendar, go_live_projection, pool_readiness
from onboarding.services import task_start, task_submit

pytestmark = pytest.mark.django_db

THURSDAY = date(2026, 12, 3)


def test_calendar_skips_weekends_and_holidays():
    cal = WorkCalendar(start=date(2026, 12, 5), holidays=frozenset({date(2026, 12, 8)}))  # a Saturday
    assert cal.origin == date(2026, 12, 7)  # Monday
    assert [cal.day(i) for i in range(3)] == [date(2026, 12, 7), date(2026, 12, 9), date(2026, 12, 10)]
    assert cal.index(date(2026, 12, 10)) == 2
    assert cal.day(-1) == date(2026, 12, 4)  # the Friday before
    assert cal.end_date(1.0) == date(2026, 12, 7) and cal.end_date(1.5) == date(2026, 12, 9)


def test_default_projection_follows_estimates_leads_and_the_critical_path(onboarding_plan):
    projection = go_live_projection(start=THURSDAY)
    uat, prod = projection.environments["UAT"], projection.environments["PRODUCTION"]
    assert uat.lead.basis.startswith("default") and (uat.lead.likely, uat.lead.late) == (5.0, 10.0)
    assert uat.likely <= uat.late and prod.likely <= prod.late
    assert uat.likely < prod.likely  # every Production task waits for its UAT counterpart
    path = [tp.task.slug for tp in prod.critical_path]
    assert path[-1].endswith("-production") and path[0].endswith("-uat")
    # The path is a chain: each step is a prerequisite of the next.
    for before, after in zip(path, path[1:], strict=False):
        assert OnboardingTask.objects.get(slug=after).prerequisites.filter(slug=before).exists()


def test_holidays_push_the_date(onboarding_plan, settings):
    before = go_live_projection(start=THURSDAY).environments["UAT"].likely
    settings.ONBOARDING_HOLIDAYS = [(THURSDAY + timedelta(days=d)).isoformat() for d in (0, 1, 4)]
    after = go_live_projection(start=THURSDAY).environments["UAT"].likely
    assert after > before
    assert WorkCalendar(start=THURSDAY, holidays=frozenset()).index(after) - \
        WorkCalendar(start=THURSDAY, holidays=frozenset()).index(before) == 3


def test_changing_an_estimate_and_an_approval_moves_the_projected_date(onboarding_plan, drive_to_approved):
    uat = go_live_projection().environments["UAT"]
    critical = uat.critical_path[0].task
    OnboardingTask.objects.filter(pk=critical.pk).update(estimate_days=critical.estimate_days + Decimal("10"))
    longer = go_live_projection().environments["UAT"]
    assert longer.likely > uat.likely and longer.late > uat.late
    assert longer.critical_path[0].task == critical

    # Approving it today, with a same-day decision: the task is done today, and the observed lead time
    # (0 working days) replaces the plan's 5-10 days for every remaining approval.
    drive_to_approved(OnboardingTask.objects.get(pk=critical.pk))
    approved = go_live_projection().environments["UAT"]
    assert approved.lead.basis.startswith("observed: 1 approval") and approved.lead.likely == 0.0
    assert approved.likely < uat.likely and approved.late < longer.late


def test_late_tasks_are_flagged(onboarding_plan, lead):
    task = task_submit(task=task_start(task=onboarding_plan["kms-onboarding-uat"], user=lead), user=lead)
    OnboardingTask.objects.filter(pk=task.pk).update(submitted_at=timezone.now() - timedelta(days=30))
    projection = go_live_projection()
    late = {tp.task.slug: tp.late_reason for tp in projection.late_tasks()}
    assert late["kms-onboarding-uat"] == "waiting for approval longer than the lead time"
    # Still waiting: projected approved no earlier than today.
    assert projection.tasks[task.pk].likely_end >= projection.calendar.origin


def test_command_prints_the_contract_json_on_the_last_line(onboarding_plan):
    out = StringIO()
    call_command("onboarding_projection", "--start", "2026-12-03", stdout=out)
    data = json.loads(out.getvalue().strip().splitlines()[-1])
    assert set(data) == {"UAT", "PRODUCTION"}
    for env in data.values():
        assert set(env) == {"likely", "late", "critical_path"}
        assert date.fromisoformat(env["late"]) >= date.fromisoformat(env["likely"]) >= THURSDAY
        assert env["critical_path"] and all(isinstance(t, str) for t in env["critical_path"])
    assert data["PRODUCTION"]["critical_path"][-1] in set(
        OnboardingTask.objects.filter(environment="PRODUCTION").values_list("title", flat=True))


def test_admin_exports_csv_and_icalendar_and_lists_projected_dates(client, onboarding_plan, lead):
    client.force_login(lead)
    projection = go_live_projection()
    csv_text = client.get(reverse("admin:onboarding_onboardingtask_projection_export", args=["csv"])).content.decode()
    lines = csv_text.splitlines()
    assert lines[0].startswith("environment,task,state")
    assert len(lines) == 1 + OnboardingTask.objects.count() + 2
    assert f"UAT ready (all common tasks approved),,,,,,{projection.environments['UAT'].likely}" in csv_text
    ics = client.get(reverse("admin:onboarding_onboardingtask_projection_export", args=["ics"]))
    assert ics["Content-Type"].startswith("text/calendar")
    body = ics.content.decode()
    assert body.startswith("BEGIN:VCALENDAR\r\n") and body.endswith("END:VCALENDAR\r\n")
    assert f"DTSTART;VALUE=DATE:{projection.environments['PRODUCTION'].likely:%Y%m%d}" in body
    page = client.get(reverse("admin:onboarding_onboardingtask_changelist")).content.decode()
    assert "Projected (likely / late)" in page
    kms = projection.tasks[onboarding_plan["kms-onboarding-uat"].pk]
    assert f"{kms.likely_end:%Y-%m-%d} / {kms.late_end:%Y-%m-%d}" in page


def test_pool_readiness_adds_the_time_to_fill_at_the_measured_refill_speed(onboarding_plan, make_pool, client, lead):
    from refill.models import RefillRun

    pool = make_pool("prod-cards", pairs=1_000, environment="PRODUCTION", target_size=10_000)
    end = timezone.now()
    RefillRun.objects.create(pool=pool, trigger="manual", outcome="succeeded", requested=1_000, inserted=1_000,
                             finished_at=end)
    RefillRun.objects.filter(pool=pool).update(started_at=end - timedelta(seconds=36))  # 100,000 pairs/h
    prod = go_live_projection().environments["PRODUCTION"]
    (row,) = pool_readiness(projection=prod)
    assert (row["pool"], row["missing"], row["pairs_per_hour"]) == ("prod-cards", 9_000, pytest.approx(100_000))
    assert row["hours_to_fill"] == pytest.approx(0.09) and row["likely"] == prod.likely
    # A pool that never refilled has no measured speed: no time to fill is invented.
    uat = pool_readiness(projection=go_live_projection().environments["UAT"])
    assert all(r["hours_to_fill"] is None and r["pool"] != "prod-cards" for r in uat)
    client.force_login(lead)
    page = client.get(reverse("admin:onboarding_onboardingtask_summary", args=["PRODUCTION"])).content.decode()
    assert "0.1 h of refilling after " + prod.likely.isoformat() in page
