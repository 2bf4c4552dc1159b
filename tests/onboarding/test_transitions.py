"""The state machine: every allowed transition, every forbidden one, and the audit trail."""
from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from common.append_only import AppendOnlyError
from onboarding.errors import FourEyesViolation, NoteRequired, TransitionNotAllowedFromState
from onboarding.models import ApprovalDecision, OnboardingTask, OnboardingTransition
from onboarding.models import OnboardingState as S
from onboarding.services import task_approve, task_drive_to_approved, task_reject, task_start, task_submit

pytestmark = pytest.mark.django_db

ACTIONS = ("start", "submit", "approve", "reject")
ALLOWED = {
    S.NOT_STARTED: {"start"},
    S.IN_PROGRESS: {"submit"},
    S.AWAITING_APPROVAL: {"approve", "reject"},
    S.APPROVED: set(),
    S.REJECTED: {"start"},
}


@pytest.fixture
def kms_uat(onboarding_plan):
    return onboarding_plan["kms-onboarding-uat"]


@pytest.fixture
def put_in_state(lead, approver):
    """Drive a prerequisite-free task to ``state`` through the services only."""

    def put(task, state):
        if state == S.NOT_STARTED:
            return task
        task = task_start(task=task, user=lead)
        if state == S.IN_PROGRESS:
            return task
        task = task_submit(task=task, user=lead)
        if state == S.AWAITING_APPROVAL:
            return task
        if state == S.APPROVED:
            return task_approve(task=task, user=approver)
        return task_reject(task=task, user=approver, note="missing evidence")

    return put


def _do(action, task, lead, approver):
    if action == "start":
        return task_start(task=task, user=lead)
    if action == "submit":
        return task_submit(task=task, user=lead)
    if action == "approve":
        return task_approve(task=task, user=approver, note="ok")
    return task_reject(task=task, user=approver, note="not yet")


@pytest.mark.parametrize("state", list(ALLOWED))
@pytest.mark.parametrize("action", ACTIONS)
def test_each_action_is_allowed_exactly_from_its_source_states(state, action, kms_uat, put_in_state, lead, approver):
    task = put_in_state(kms_uat, state)
    before = OnboardingTransition.objects.filter(task=task).count()
    if action in ALLOWED[state]:
        after = _do(action, task, lead, approver)
        assert after.state != state
        assert OnboardingTransition.objects.filter(task=task).count() == before + 1
    else:
        with pytest.raises(TransitionNotAllowedFromState):
            _do(action, task, lead, approver)
        task.refresh_from_db()
        assert task.state == state
        assert OnboardingTransition.objects.filter(task=task).count() == before


def test_full_happy_path_records_who_and_when(kms_uat, lead, approver):
    task = task_start(task=kms_uat, user=lead)
    assert task.state == S.IN_PROGRESS and task.owner == lead
    task = task_submit(task=task, user=lead)
    assert task.state == S.AWAITING_APPROVAL
    assert task.submitted_by == lead and task.submitted_at is not None
    task = task_approve(task=task, user=approver, note="KMS keys verified")
    task.refresh_from_db()
    assert task.state == S.APPROVED
    assert task.approved_by == approver and task.approved_at >= task.submitted_at

    trail = list(OnboardingTransition.objects.filter(task=task).values_list("from_state", "to_state", "by__username"))
    assert trail == [
        (S.NOT_STARTED, S.IN_PROGRESS, "lead"),
        (S.IN_PROGRESS, S.AWAITING_APPROVAL, "lead"),
        (S.AWAITING_APPROVAL, S.APPROVED, "approver"),
    ]
    decision = ApprovalDecision.objects.get(task=task)
    assert (decision.decision, decision.decided_by, decision.note) == ("approve", approver, "KMS keys verified")
    assert decision.decided_at == task.approved_at


def test_rejected_task_goes_back_to_in_progress_and_can_be_approved_later(kms_uat, lead, approver):
    task = task_submit(task=task_start(task=kms_uat, user=lead), user=lead)
    task = task_reject(task=task, user=approver, note="ticket number missing")
    assert task.state == S.REJECTED
    task = task_start(task=task, user=lead)
    assert task.state == S.IN_PROGRESS
    task = task_approve(task=task_submit(task=task, user=lead), user=approver)
    assert task.state == S.APPROVED
    assert list(ApprovalDecision.objects.filter(task=task).order_by("id").values_list("decision", "note")) == [
        ("reject", "ticket number missing"), ("approve", ""),
    ]
    assert OnboardingTransition.objects.filter(task=task).count() == 6


def test_reject_needs_a_note(kms_uat, lead, approver):
    task = task_submit(task=task_start(task=kms_uat, user=lead), user=lead)
    with pytest.raises(NoteRequired):
        task_reject(task=task, user=approver, note="   ")
    task.refresh_from_db()
    assert task.state == S.AWAITING_APPROVAL
    assert not ApprovalDecision.objects.filter(task=task).exists()


def test_state_cannot_be_assigned_directly(kms_uat):
    with pytest.raises(AttributeError):
        kms_uat.state = S.APPROVED


def test_database_refuses_an_approved_task_without_a_distinct_approver(kms_uat, lead):
    task = task_submit(task=task_start(task=kms_uat, user=lead), user=lead)
    with pytest.raises(IntegrityError), transaction.atomic():
        OnboardingTask.objects.filter(pk=task.pk).update(state=S.APPROVED, approved_by=lead,
                                                         approved_at=task.submitted_at)
    with pytest.raises(IntegrityError), transaction.atomic():
        OnboardingTask.objects.filter(pk=task.pk).update(state=S.APPROVED)


def test_audit_rows_are_append_only_in_python_and_in_the_database(kms_uat, lead, approver):
    task = task_approve(task=task_submit(task=task_start(task=kms_uat, user=lead), user=lead), user=approver)
    decision = ApprovalDecision.objects.get(task=task)
    transition = OnboardingTransition.objects.filter(task=task).first()
    for row in (decision, transition):
        row.note = "rewritten"
        with pytest.raises(PermissionError):
            row.save()
        with pytest.raises(PermissionError):
            row.delete()
    for model in (ApprovalDecision, OnboardingTransition):
        with pytest.raises(AppendOnlyError):
            model.objects.filter(task=task).update(note="rewritten")
        with pytest.raises(AppendOnlyError):
            model.objects.filter(task=task).delete()
        # What bypasses the model (a plain queryset, raw SQL) is refused by the database trigger.
        with pytest.raises(IntegrityError), transaction.atomic():
            QuerySet(model).filter(task=task).update(note="rewritten")
        with pytest.raises(IntegrityError), transaction.atomic():
            QuerySet(model).filter(task=task).delete()
    assert ApprovalDecision.objects.get(pk=decision.pk).note == ""
    assert OnboardingTransition.objects.filter(task=task).count() == 3


@pytest.mark.parametrize("start_in", [S.NOT_STARTED, S.IN_PROGRESS, S.AWAITING_APPROVAL, S.REJECTED, S.APPROVED])
def test_drive_to_approved_finishes_the_four_eyes_path_from_any_state(kms_uat, lead, approver, put_in_state,
                                                                      start_in):
    put_in_state(kms_uat, start_in)
    before = OnboardingTransition.objects.filter(task=kms_uat).count()
    task = task_drive_to_approved(task=kms_uat, submitter=lead, approver=approver, note="demo")
    assert (task.state, task.submitted_by, task.approved_by) == (S.APPROVED, lead, approver)
    steps = {S.NOT_STARTED: 3, S.REJECTED: 3, S.IN_PROGRESS: 2, S.AWAITING_APPROVAL: 1, S.APPROVED: 0}[start_in]
    assert OnboardingTransition.objects.filter(task=task).count() == before + steps
    # An already approved task is left alone: its original decision (no note) stays the only one.
    expected_note = "" if start_in == S.APPROVED else "demo"
    assert ApprovalDecision.objects.filter(task=task, decision="approve").get().note == expected_note


def test_four_eyes_refuses_an_approver_who_started_the_task(kms_uat, make_onboarding_user):
    """Issue 20, finding 7: ops1 starts, ops2 submits, ops1 approves → refused (and rejecting likewise)."""
    ops1 = make_onboarding_user("ops1", approver=True)
    ops2 = make_onboarding_user("ops2", approver=True)
    task = task_submit(task=task_start(task=kms_uat, user=ops1), user=ops2)
    for decide in (lambda: task_approve(task=task, user=ops1), lambda: task_reject(task=task, user=ops1, note="x")):
        with pytest.raises(FourEyesViolation):
            decide()
    task.refresh_from_db()
    assert (task.state, task.approved_by) == (S.AWAITING_APPROVAL, None)
    assert not ApprovalDecision.objects.filter(task=task).exists()


def test_four_eyes_remembers_every_round_of_work(kms_uat, make_onboarding_user, approver):
    """Whoever started or submitted in an earlier round (before a rejection) still may not approve."""
    ops1 = make_onboarding_user("ops1", approver=True)
    ops2 = make_onboarding_user("ops2")
    task = task_submit(task=task_start(task=kms_uat, user=ops1), user=ops1)
    task = task_reject(task=task, user=approver, note="evidence missing")
    task = task_submit(task=task_start(task=task, user=ops2), user=ops2)
    with pytest.raises(FourEyesViolation):
        task_approve(task=task, user=ops1)
    # The approver who rejected did none of the work and may decide again.
    assert task_approve(task=task, user=approver).state == S.APPROVED


def test_database_refuses_an_approval_by_a_worker_that_bypasses_the_services(kms_uat, make_onboarding_user):
    ops1 = make_onboarding_user("ops1", approver=True)
    ops2 = make_onboarding_user("ops2")
    task = task_submit(task=task_start(task=kms_uat, user=ops1), user=ops2)
    with pytest.raises(IntegrityError), transaction.atomic():
        OnboardingTask.objects.filter(pk=task.pk).update(state=S.APPROVED, approved_by=ops1,
                                                         approved_at=task.submitted_at)
    task.refresh_from_db()
    assert task.state == S.AWAITING_APPROVAL
