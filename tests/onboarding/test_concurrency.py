"""Two approvers deciding on the same task at the same moment: exactly one decision is recorded."""
from __future__ import annotations

import pytest

from onboarding.errors import TransitionNotAllowedFromState
from onboarding.models import ApprovalDecision, OnboardingTask, OnboardingTransition
from onboarding.models import OnboardingState as S
from onboarding.services import task_approve, task_reject, task_start, task_submit


@pytest.mark.django_db(transaction=True)
def test_concurrent_approve_and_reject_serialise_on_the_task_row(onboarding_plan, lead, approver,
                                                                  make_onboarding_user, run_concurrently):
    other = make_onboarding_user("other-approver", approver=True)
    task = task_submit(task=task_start(task=onboarding_plan["kms-onboarding-uat"], user=lead), user=lead)

    def deciding(call):
        def decide() -> str:
            try:
                call()
                return "ok"
            except TransitionNotAllowedFromState:
                return "refused"
        return decide

    outcomes = run_concurrently(deciding(lambda: task_approve(task=task, user=approver)),
                                deciding(lambda: task_reject(task=task, user=other, note="no")), timeout=30)

    assert sorted(outcomes) == ["ok", "refused"]
    task = OnboardingTask.objects.get(pk=task.pk)
    assert task.state in (S.APPROVED, S.REJECTED)
    assert ApprovalDecision.objects.filter(task=task).count() == 1
    assert OnboardingTransition.objects.filter(task=task).count() == 3
