"""The plan (plan.json from the original plan's task list) and its idempotent loading."""
from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from onboarding.models import (
    ApprovalDecision,
    OnboardingTask,
    OnboardingTransition,
)
from onboarding.models import (
    OnboardingGroup as G,
)
from onboarding.models import (
    OnboardingState as S,
)
from onboarding.readiness import missing_approvals
from onboarding.services import plan_load, task_start

pytestmark = pytest.mark.django_db

COMMON_TITLES = {
    "HERA KMS onboarding - UAT", "HERA KMS onboarding - Production",
    "Master key creation - UAT", "Master key creation - Production",
    "TOME NS2 namespace onboarding - UAT", "TOME NS2 namespace onboarding - Production",
    "Validate onboarding with TOME team - UAT", "Validate onboarding with TOME team - Production",
}


def _snapshot() -> list[tuple]:
    rows = []
    for t in OnboardingTask.objects.order_by("slug").prefetch_related("prerequisites"):
        rows.append((t.pk, t.slug, t.title, t.environment, t.group, t.position, t.description, t.estimate_days,
                     t.optional, t.state, t.owner_id, t.updated_at,
                     tuple(sorted(p.slug for p in t.prerequisites.all()))))
    return rows


def _load(*args: str) -> str:
    out = StringIO()
    call_command("load_onboarding_plan", *args, stdout=out)
    return out.getvalue()


def test_the_plan_holds_every_task_of_the_original_plan(onboarding_plan):
    tasks = OnboardingTask.objects.all()
    assert tasks.count() == 33
    common = tasks.filter(group=G.COMMON)
    assert set(common.values_list("title", flat=True)) == COMMON_TITLES
    assert common.filter(environment="UAT").count() == 4 and common.filter(environment="PRODUCTION").count() == 4
    assert tasks.filter(group=G.LIBRARY).count() == 11
    assert {g: tasks.filter(group=g).count() for g in (G.PREFETCH_BATCH_JOB, G.PREFETCH_APPLICATION,
                                                       G.PREFETCH_TESTING_DEPLOYMENT, G.PREFETCH_POOL_MANAGEMENT)} == {
        G.PREFETCH_BATCH_JOB: 5, G.PREFETCH_APPLICATION: 5,
        G.PREFETCH_TESTING_DEPLOYMENT: 2, G.PREFETCH_POOL_MANAGEMENT: 2,
    }
    assert not tasks.exclude(group=G.COMMON).exclude(environment__isnull=True).exists()
    assert list(tasks.filter(optional=True).values_list("slug", flat=True)) == ["lib-overloaded-methods"]
    assert not tasks.filter(estimate_days__isnull=True).exists()
    assert "FOR UPDATE SKIP LOCKED" in onboarding_plan["prefetch-card-creation"].description
    assert onboarding_plan["prefetch-lambda"].description.startswith("Fetches 5K tokens from NS1")


def test_loading_twice_changes_nothing(onboarding_plan):
    before = _snapshot()
    first = _load()
    second = _load()
    assert "0 created, 0 updated, 33 unchanged (33 tasks)" in first
    assert first == second
    assert _snapshot() == before
    assert OnboardingTask.prerequisites.through.objects.count() == sum(len(r[-1]) for r in before)


def test_loading_into_an_empty_table_creates_everything_once(onboarding_plan):
    OnboardingTask.prerequisites.through.objects.all().delete()
    OnboardingTask.objects.all().delete()
    result = plan_load()
    assert (result.created, result.updated, result.unchanged) == (33, 0, 0)
    again = plan_load()
    assert (again.created, again.updated, again.unchanged) == (0, 0, 33)


def test_reloading_restores_plan_fields_but_keeps_progress_and_owner(onboarding_plan, lead):
    task = task_start(task=onboarding_plan["kms-onboarding-uat"], user=lead)
    OnboardingTask.objects.filter(pk=task.pk).update(title="renamed", estimate_days=Decimal("9.5"))
    task.prerequisites.add(onboarding_plan["lib-publish"])
    result = plan_load()
    assert (result.created, result.updated, result.unchanged) == (0, 1, 32)
    task.refresh_from_db()
    assert task.title == "HERA KMS onboarding - UAT" and task.estimate_days == Decimal("1.0")
    assert not task.prerequisites.exists()
    assert task.state == S.IN_PROGRESS and task.owner == lead


def test_approve_environment_demo_goes_through_four_eyes_and_is_idempotent(onboarding_plan):
    assert missing_approvals(environment="UAT")
    out = _load("--approve-environment", "UAT")
    assert "Demo approvals for UAT: 4 approved now, 0 already approved." in out
    assert missing_approvals(environment="UAT") == []
    User = get_user_model()
    lead, approver = User.objects.get(username="demo-lead"), User.objects.get(username="demo-approver")
    for task in OnboardingTask.objects.filter(environment="UAT"):
        assert (task.state, task.submitted_by, task.approved_by) == (S.APPROVED, lead, approver)
    assert not lead.has_usable_password() and not approver.has_usable_password()
    assert approver.has_perm("onboarding.approve_onboardingtask")
    assert not lead.has_perm("onboarding.approve_onboardingtask")
    assert ApprovalDecision.objects.count() == 4 and OnboardingTransition.objects.count() == 12

    again = _load("--approve-environment", "uat")
    assert "0 approved now, 4 already approved" in again
    assert ApprovalDecision.objects.count() == 4 and OnboardingTransition.objects.count() == 12
    assert len(missing_approvals(environment="PRODUCTION")) == 4


def test_approve_environment_production_after_uat(onboarding_plan):
    _load("--approve-environment", "UAT")
    _load("--approve-environment", "PRODUCTION")
    assert missing_approvals(environment="PRODUCTION") == []


def test_approve_environment_production_without_uat_fails_cleanly(onboarding_plan):
    with pytest.raises(CommandError, match="TOME NS2 namespace onboarding - UAT"):
        _load("--approve-environment", "PRODUCTION")
    assert not OnboardingTask.objects.filter(environment="PRODUCTION", state=S.APPROVED).exists()
