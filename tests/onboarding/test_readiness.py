"""The readiness gate the refill run consults: both sides, and failing closed."""
from __future__ import annotations

import pytest

from onboarding.models import OnboardingTask
from onboarding.readiness import missing_approvals
from onboarding.services import task_start, task_submit

pytestmark = pytest.mark.django_db

UAT_TITLES = [
    "HERA KMS onboarding - UAT",
    "Master key creation - UAT",
    "TOME NS2 namespace onboarding - UAT",
    "Validate onboarding with TOME team - UAT",
]


def test_fresh_plan_blocks_both_environments_naming_every_common_task(onboarding_plan):
    assert missing_approvals(environment="UAT") == UAT_TITLES
    assert missing_approvals(environment="PRODUCTION") == [t.replace("UAT", "Production") for t in UAT_TITLES]
    assert missing_approvals(environment="UAT") != []


def test_one_unapproved_task_is_enough_to_block(onboarding_plan, drive_to_approved, lead):
    for slug in ("kms-onboarding-uat", "master-key-uat", "ns2-namespace-uat"):
        drive_to_approved(onboarding_plan[slug])
    validation = task_submit(task=task_start(task=onboarding_plan["tome-validation-uat"], user=lead), user=lead)
    assert missing_approvals(environment="UAT") == ["Validate onboarding with TOME team - UAT"]
    drive_to_approved(validation)
    assert missing_approvals(environment="UAT") == []
    assert missing_approvals(environment="uat") == []  # the environment is matched case-insensitively


def test_uat_ready_does_not_make_production_ready(approve_onboarding):
    approve_onboarding("UAT")
    assert missing_approvals(environment="UAT") == []
    assert len(missing_approvals(environment="PRODUCTION")) == 4
    approve_onboarding("PRODUCTION")
    assert missing_approvals(environment="PRODUCTION") == []


def test_implementation_tasks_never_gate_a_pool(approve_onboarding):
    approve_onboarding("UAT")
    assert OnboardingTask.objects.filter(environment__isnull=True).exclude(state="APPROVED").count() == 25
    assert missing_approvals(environment="UAT") == []


@pytest.mark.parametrize("environment", ["DEV", "", "staging"])
def test_unknown_environment_fails_closed(onboarding_plan, environment):
    missing = missing_approvals(environment=environment)
    assert len(missing) == 1 and "not loaded" in missing[0]


def test_missing_plan_fails_closed(onboarding_plan):
    OnboardingTask.prerequisites.through.objects.all().delete()
    OnboardingTask.objects.all().delete()
    assert missing_approvals(environment="UAT") != []
