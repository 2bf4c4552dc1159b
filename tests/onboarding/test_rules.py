"""Business rules: prerequisites, four-eyes, approver permission, who may act at all."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser

from common.errors import DomainRuleViolation, TokenPoolError
from onboarding.errors import (
    ApproverPermissionRequired,
    FourEyesViolation,
    OnboardingRuleViolation,
    PrerequisitesNotApproved,
)
from onboarding.models import ApprovalDecision
from onboarding.models import OnboardingState as S
from onboarding.services import task_approve, task_reject, task_start, task_submit

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("task_slug", "prerequisite_slugs"), [
    ("master-key-uat", {"kms-onboarding-uat"}),
    ("tome-validation-uat", {"ns2-namespace-uat"}),
    ("kms-onboarding-production", {"kms-onboarding-uat"}),
    ("master-key-production", {"kms-onboarding-production", "master-key-uat"}),
    ("ns2-namespace-production", {"ns2-namespace-uat"}),
    ("tome-validation-production", {"ns2-namespace-production", "tome-validation-uat"}),
    ("kms-onboarding-uat", set()),
    ("ns2-namespace-uat", set()),
])
def test_common_task_prerequisites_follow_the_plan(onboarding_plan, task_slug, prerequisite_slugs):
    task = onboarding_plan[task_slug]
    assert set(task.prerequisites.values_list("slug", flat=True)) == prerequisite_slugs


def test_master_key_cannot_start_before_kms_onboarding_is_approved(onboarding_plan, lead, drive_to_approved):
    master = onboarding_plan["master-key-uat"]
    with pytest.raises(PrerequisitesNotApproved) as exc:
        task_start(task=master, user=lead)
    assert exc.value.missing == ["HERA KMS onboarding - UAT"]
    assert exc.value.status == 400 and exc.value.code == "invalid_request"
    assert isinstance(exc.value, DomainRuleViolation)

    drive_to_approved(onboarding_plan["kms-onboarding-uat"])
    assert task_start(task=master, user=lead).state == S.IN_PROGRESS


def test_production_task_needs_its_uat_counterpart_approved(onboarding_plan, lead, drive_to_approved):
    ns2_prod = onboarding_plan["ns2-namespace-production"]
    with pytest.raises(PrerequisitesNotApproved) as exc:
        task_start(task=ns2_prod, user=lead)
    assert exc.value.missing == ["TOME NS2 namespace onboarding - UAT"]
    # Approved only up to "awaiting approval" is still not approved.
    uat = task_submit(task=task_start(task=onboarding_plan["ns2-namespace-uat"], user=lead), user=lead)
    assert uat.state == S.AWAITING_APPROVAL
    with pytest.raises(PrerequisitesNotApproved):
        task_start(task=ns2_prod, user=lead)
    drive_to_approved(uat)
    assert drive_to_approved(ns2_prod).state == S.APPROVED


def test_validation_needs_namespace_onboarding_of_the_same_environment(onboarding_plan, lead, drive_to_approved):
    drive_to_approved(onboarding_plan["ns2-namespace-uat"])
    drive_to_approved(onboarding_plan["tome-validation-uat"])
    drive_to_approved(onboarding_plan["ns2-namespace-uat"])
    with pytest.raises(PrerequisitesNotApproved) as exc:
        task_start(task=onboarding_plan["tome-validation-production"], user=lead)
    assert exc.value.missing == ["TOME NS2 namespace onboarding - Production"]


def test_implementation_tasks_follow_build_order(onboarding_plan, lead):
    with pytest.raises(PrerequisitesNotApproved) as exc:
        task_start(task=onboarding_plan["lib-publish"], user=lead)
    assert set(exc.value.missing) == {"Write unit tests", "Write integration tests with TOME dev environment"}


def test_submitter_cannot_approve_or_reject_even_as_an_approver(onboarding_plan, make_onboarding_user, approver):
    both = make_onboarding_user("both-hats", approver=True)
    task = task_submit(task=task_start(task=onboarding_plan["kms-onboarding-uat"], user=both), user=both)
    with pytest.raises(FourEyesViolation):
        task_approve(task=task, user=both)
    with pytest.raises(FourEyesViolation):
        task_reject(task=task, user=both, note="self-review")
    task.refresh_from_db()
    assert task.state == S.AWAITING_APPROVAL and not ApprovalDecision.objects.exists()
    assert task_approve(task=task, user=approver).approved_by == approver


def test_starting_the_task_blocks_approval_as_submitting_does(onboarding_plan, lead, approver):
    # Issue 20: four-eyes is about who did the work, not only who asked for approval.
    task = task_start(task=onboarding_plan["kms-onboarding-uat"], user=approver)
    task = task_submit(task=task, user=lead)
    with pytest.raises(FourEyesViolation):
        task_approve(task=task, user=approver)


def test_only_users_with_the_approver_permission_may_decide(onboarding_plan, lead, make_onboarding_user):
    colleague = make_onboarding_user("colleague")
    task = task_submit(task=task_start(task=onboarding_plan["kms-onboarding-uat"], user=lead), user=lead)
    for call in (lambda: task_approve(task=task, user=colleague),
                 lambda: task_reject(task=task, user=colleague, note="no")):
        with pytest.raises(ApproverPermissionRequired) as exc:
            call()
        assert (exc.value.code, exc.value.status) == ("permission_denied", 403)
        assert isinstance(exc.value, TokenPoolError)
    task.refresh_from_db()
    assert task.state == S.AWAITING_APPROVAL


def test_a_superuser_counts_as_an_approver(onboarding_plan, lead, django_user_model):
    boss = django_user_model.objects.create_superuser("boss", password=None)
    task = task_submit(task=task_start(task=onboarding_plan["kms-onboarding-uat"], user=lead), user=lead)
    assert task_approve(task=task, user=boss).approved_by == boss


def test_anonymous_and_inactive_users_cannot_act(onboarding_plan, make_onboarding_user):
    ghost = make_onboarding_user("ghost")
    ghost.is_active = False
    ghost.save()
    for user in (AnonymousUser(), ghost):
        with pytest.raises(OnboardingRuleViolation):
            task_start(task=onboarding_plan["kms-onboarding-uat"], user=user)
