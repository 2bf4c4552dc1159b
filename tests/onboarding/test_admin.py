"""The onboarding admin through the Django test client, as logged-in staff users."""
from __future__ import annotations

import re

import pytest
from django.contrib.admin import helpers
from django.urls import reverse

from onboarding.models import ApprovalDecision, OnboardingTask
from onboarding.models import OnboardingState as S
from onboarding.services import task_start, task_submit

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:onboarding_onboardingtask_changelist"


def _action(client, action: str, tasks, **extra):
    data = {"action": action, helpers.ACTION_CHECKBOX_NAME: [t.pk for t in tasks], "index": 0, **extra}
    return client.post(reverse(CHANGELIST), data, follow=True)


def _confirm(client, action: str, tasks, note: str):
    data = {"action": action, helpers.ACTION_CHECKBOX_NAME: [t.pk for t in tasks], "confirm": "yes", "note": note}
    return client.post(reverse(CHANGELIST), data, follow=True)


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def _state(task) -> str:
    return OnboardingTask.objects.get(pk=task.pk).state


@pytest.fixture
def as_user(client):
    def login(user):
        client.force_login(user)
        return client
    return login


def test_changelist_filters_by_environment_group_and_state(as_user, lead, onboarding_plan):
    c = as_user(lead)
    response = c.get(reverse(CHANGELIST))
    assert response.status_code == 200
    assert response.context["cl"].result_count == 33
    for query, expected in (({"environment__exact": "UAT"}, 4), ({"group__exact": "library"}, 11),
                            ({"state__exact": "NOT_STARTED"}, 33), ({"state__exact": "APPROVED"}, 0)):
        assert c.get(reverse(CHANGELIST), query).context["cl"].result_count == expected
    body = response.content.decode()
    assert "Readiness summary — UAT" in body and "Submitted → decided by" in body
    assert "Est. days (illustrative)" in body
    assert "Estimates are illustrative: the original plan leaves them empty" in body


def test_start_and_submit_actions(as_user, lead, onboarding_plan):
    c = as_user(lead)
    kms = onboarding_plan["kms-onboarding-uat"]
    response = _action(c, "start_tasks", [kms])
    assert response.status_code == 200 and _state(kms) == S.IN_PROGRESS
    assert any("Started 1 task(s): HERA KMS onboarding - UAT" in m for m in _messages(response))
    response = _action(c, "submit_tasks", [kms])
    assert _state(kms) == S.AWAITING_APPROVAL
    assert OnboardingTask.objects.get(pk=kms.pk).submitted_by == lead
    row = c.get(reverse(CHANGELIST), {"q": "HERA KMS onboarding - UAT"}).content.decode()
    assert "Awaiting approval (0.0 days)" in row and "lead → …" in row  # waiting time and four-eyes pair


def test_refused_action_is_a_message_not_a_500(as_user, lead, onboarding_plan):
    c = as_user(lead)
    master = onboarding_plan["master-key-uat"]
    response = _action(c, "start_tasks", [master, onboarding_plan["ns2-namespace-uat"]])
    assert response.status_code == 200
    msgs = _messages(response)
    assert any("before its prerequisites are approved: HERA KMS onboarding - UAT" in m for m in msgs)
    assert any("Started 1 task(s): TOME NS2 namespace onboarding - UAT" in m for m in msgs)
    assert _state(master) == S.NOT_STARTED


def test_approve_shows_a_note_page_then_approves(as_user, lead, approver, onboarding_plan):
    kms = task_submit(task=task_start(task=onboarding_plan["kms-onboarding-uat"], user=lead), user=lead)
    c = as_user(approver)
    page = _action(c, "approve_tasks", [kms])
    assert page.status_code == 200
    assert page.templates[0].name == "admin/onboarding/decision_note.html"
    assert "HERA KMS onboarding - UAT" in page.content.decode()
    assert _state(kms) == S.AWAITING_APPROVAL

    response = _confirm(c, "approve_tasks", [kms], note="Checked ticket KMS-42")
    assert response.status_code == 200 and response.redirect_chain
    task = OnboardingTask.objects.get(pk=kms.pk)
    assert (task.state, task.approved_by) == (S.APPROVED, approver)
    assert ApprovalDecision.objects.get(task=task).note == "Checked ticket KMS-42"


def test_reject_requires_a_note_on_the_intermediate_page(as_user, lead, approver, onboarding_plan):
    kms = task_submit(task=task_start(task=onboarding_plan["kms-onboarding-uat"], user=lead), user=lead)
    c = as_user(approver)
    page = _action(c, "reject_tasks", [kms]).content.decode()
    assert "<title>Reject 1 onboarding task(s)" in page and 'value="Reject"' in page
    assert "You are about to <strong>reject</strong>" in page and "Rejecte " not in page
    response = _confirm(c, "reject_tasks", [kms], note="")
    assert response.status_code == 200 and not response.redirect_chain
    assert response.context["form"].errors["note"]
    assert _state(kms) == S.AWAITING_APPROVAL
    response = _confirm(c, "reject_tasks", [kms], note="Wrong key alias")
    assert _state(kms) == S.REJECTED
    assert any("Rejected 1 task(s)" in m for m in _messages(response))


def test_submitter_approving_sees_the_four_eyes_message(as_user, make_onboarding_user, onboarding_plan):
    both = make_onboarding_user("both", approver=True)
    kms = task_submit(task=task_start(task=onboarding_plan["kms-onboarding-uat"], user=both), user=both)
    response = _confirm(as_user(both), "approve_tasks", [kms], note="")
    assert response.status_code == 200
    assert any("four-eyes" in m for m in _messages(response))
    assert _state(kms) == S.AWAITING_APPROVAL


def test_submitter_is_refused_before_the_decision_form(as_user, make_onboarding_user, approver, onboarding_plan):
    both = make_onboarding_user("both", approver=True)
    mine = task_submit(task=task_start(task=onboarding_plan["kms-onboarding-uat"], user=both), user=both)
    response = _action(as_user(both), "approve_tasks", [mine])
    assert "decision-form" not in response.content.decode()  # no form to fill in for nothing
    assert any("four-eyes" in m and "HERA KMS onboarding - UAT" in m for m in _messages(response))
    # Another approver gets the form, with the environment's label rather than its raw value.
    page = _action(as_user(approver), "approve_tasks", [mine]).content.decode()
    assert 'id="decision-form"' in page and "<td>UAT</td>" in page
    prod = onboarding_plan["kms-onboarding-production"]
    assert "<td>Production</td>" in _action(as_user(approver), "reject_tasks", [prod]).content.decode()
    assert _state(mine) == S.AWAITING_APPROVAL


def test_approve_action_is_not_offered_without_the_permission(as_user, lead, onboarding_plan):
    kms = task_submit(task=task_start(task=onboarding_plan["kms-onboarding-uat"], user=lead), user=lead)
    c = as_user(lead)
    choices = dict(c.get(reverse(CHANGELIST)).context["action_form"].fields["action"].choices)
    assert "start_tasks" in choices and "approve_tasks" not in choices and "reject_tasks" not in choices
    response = _confirm(c, "approve_tasks", [kms], note="")
    assert response.status_code == 200 and _state(kms) == S.AWAITING_APPROVAL


def test_tasks_cannot_be_added_or_deleted_and_only_owner_is_editable(as_user, lead, make_onboarding_user,
                                                                     onboarding_plan):
    c = as_user(lead)
    kms = onboarding_plan["kms-onboarding-uat"]
    assert c.get(reverse("admin:onboarding_onboardingtask_add")).status_code == 403
    assert c.get(reverse("admin:onboarding_onboardingtask_delete", args=[kms.pk])).status_code == 403
    owner = make_onboarding_user("owner")
    url = reverse("admin:onboarding_onboardingtask_change", args=[kms.pk])
    assert c.get(url).status_code == 200
    response = c.post(url, {"owner": owner.pk, "title": "hijacked",
                            "transitions-TOTAL_FORMS": 0, "transitions-INITIAL_FORMS": 0,
                            "decisions-TOTAL_FORMS": 0, "decisions-INITIAL_FORMS": 0})
    assert response.status_code == 302
    task = OnboardingTask.objects.get(pk=kms.pk)
    assert task.owner == owner and task.title == "HERA KMS onboarding - UAT" and task.state == S.NOT_STARTED


@pytest.mark.parametrize("environment", ["UAT", "PRODUCTION"])
def test_summary_page_renders_for_each_environment(as_user, lead, approver, onboarding_plan, environment):
    task_submit(task=task_start(task=onboarding_plan["kms-onboarding-uat"], user=lead), user=lead)
    response = as_user(lead).get(reverse("admin:onboarding_onboardingtask_summary", args=[environment]))
    assert response.status_code == 200
    body = response.content.decode()
    assert "0 of 4</strong> common onboarding tasks approved" in body
    assert "200,000" in body and "100,000" in body and "(projected)" in body
    assert "Approach 2: prefetch + DB" in body
    assert "Estimate (days, illustrative)" in body and "Estimates are illustrative: the original plan leaves" in body
    if environment == "PRODUCTION":
        assert "Blocked: pools in Production do not refill" in body
        assert "TOME NS2 namespace onboarding - UAT" in body
    assert "HERA KMS onboarding - UAT" in body  # waiting for approval, listed on both pages
    other = {"UAT": "Production", "PRODUCTION": "UAT"}[environment]
    assert f"(other environment, {other}:" in body
    assert "PRODUCTION" not in re.sub(r"<[^>]*>", "", body)  # labels on the page; raw values only in links


def test_summary_page_says_ready_when_the_environment_is_approved(as_user, lead, approve_onboarding):
    approve_onboarding("UAT")
    body = as_user(lead).get(reverse("admin:onboarding_onboardingtask_summary", args=["uat"])).content.decode()
    assert "4 of 4</strong>" in body and "Ready: every common task for UAT is approved" in body


def test_summary_page_is_staff_only(client, make_onboarding_user, onboarding_plan):
    url = reverse("admin:onboarding_onboardingtask_summary")
    assert client.get(url).status_code == 302  # to the login page
    client.force_login(make_onboarding_user("outsider", staff=False))
    assert client.get(url).status_code == 302
    client.force_login(make_onboarding_user("nosy", can_change=False))
    assert client.get(url).status_code == 200


def test_admin_index_links_to_the_summary(as_user, lead, onboarding_plan):
    c = as_user(lead)
    index = c.get(reverse("admin:index")).content.decode()
    entry = reverse("admin:onboarding_onboardingsummary_changelist")
    assert entry in index
    response = c.get(entry)
    assert response.status_code == 302 and response["Location"] == reverse("admin:onboarding_onboardingtask_summary")


def test_approval_decisions_are_read_only_in_the_admin(as_user, lead, approver, drive_to_approved, onboarding_plan,
                                                       django_user_model):
    drive_to_approved(onboarding_plan["kms-onboarding-uat"])
    decision = ApprovalDecision.objects.get()
    c = as_user(django_user_model.objects.create_superuser("root", password=None))
    assert c.get(reverse("admin:onboarding_approvaldecision_changelist")).status_code == 200
    assert c.get(reverse("admin:onboarding_approvaldecision_add")).status_code == 403
    assert c.get(reverse("admin:onboarding_approvaldecision_delete", args=[decision.pk])).status_code == 403
    change = reverse("admin:onboarding_approvaldecision_change", args=[decision.pk])
    assert c.get(change).status_code == 200  # view only
    c.post(change, {"note": "rewritten"})
    assert ApprovalDecision.objects.get(pk=decision.pk).note == ""
    assert c.get(reverse("admin:onboarding_onboardingtransition_changelist")).status_code == 200
