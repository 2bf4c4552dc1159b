"""Four-eyes approval in a real browser: staff user A submits a task, approver B approves it."""
from __future__ import annotations

import pytest

from onboarding.models import ApprovalDecision, OnboardingTask
from onboarding.models import OnboardingState as S
from tests.fixtures.browser import admin_login, artifact

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "browser-test-password"


def _run_action(page, base_url: str, task: OnboardingTask, action: str) -> None:
    page.goto(f"{base_url}/admin/onboarding/onboardingtask/?environment__exact=UAT")
    page.check(f"input[name=_selected_action][value='{task.pk}']")
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")


def _alice_submits_with_bob_as_approver(live_server, browser_page, make_onboarding_user, onboarding_plan):
    """Staff user alice starts and submits the UAT KMS task; bob exists as an approver."""
    alice = make_onboarding_user("alice", password=PASSWORD)
    bob = make_onboarding_user("bob", approver=True, password=PASSWORD)
    task = onboarding_plan["kms-onboarding-uat"]
    page_a = admin_login(browser_page(), live_server, "alice", PASSWORD)
    _run_action(page_a, live_server.url, task, "start_tasks")
    page_a.wait_for_selector("text=Started 1 task(s)")
    _run_action(page_a, live_server.url, task, "submit_tasks")
    page_a.wait_for_selector("text=Submitted 1 task(s)")
    return alice, bob, task, page_a


def test_one_staff_user_submits_and_another_approves_in_the_admin(
        transactional_db, live_server, browser_page, make_onboarding_user, onboarding_plan):
    alice, bob, task, page_a = _alice_submits_with_bob_as_approver(
        live_server, browser_page, make_onboarding_user, onboarding_plan)
    base = live_server.url
    # Alice has no approver permission: the admin does not even offer the action.
    assert "approve_tasks" not in page_a.inner_html("select[name=action]")
    assert OnboardingTask.objects.get(pk=task.pk).state == S.AWAITING_APPROVAL

    page_b = admin_login(browser_page(), live_server, "bob", PASSWORD)
    _run_action(page_b, base, task, "approve_tasks")
    page_b.wait_for_selector("#decision-form")
    page_b.fill("textarea[name=note]", "Verified the KMS onboarding ticket")
    page_b.click("input[name=confirm_decision]")
    page_b.wait_for_selector("text=Approved 1 task(s): HERA KMS onboarding - UAT")

    page_b.goto(f"{base}/admin/onboarding/onboardingtask/summary/UAT/")
    page_b.wait_for_selector("#ob-progress")
    assert "1 of 4" in page_b.inner_text("#ob-progress")
    page_b.screenshot(path=artifact("onboarding-approval-summary.png"), full_page=True)

    task = OnboardingTask.objects.get(pk=task.pk)
    assert task.state == S.APPROVED
    assert task.submitted_by == alice and task.approved_by == bob
    decision = ApprovalDecision.objects.get(task=task)
    assert (decision.decided_by, decision.decision, decision.note) == (
        bob, "approve", "Verified the KMS onboarding ticket")


def test_another_staff_user_rejects_with_a_note_and_the_page_says_reject(
        transactional_db, live_server, browser_page, make_onboarding_user, onboarding_plan):
    alice, bob, task, page_a = _alice_submits_with_bob_as_approver(
        live_server, browser_page, make_onboarding_user, onboarding_plan)
    base = live_server.url
    assert "reject_tasks" not in page_a.inner_html("select[name=action]")  # four-eyes: not her call

    page_b = admin_login(browser_page(viewport={"width": 1400, "height": 900}), live_server, "bob", PASSWORD)
    _run_action(page_b, base, task, "reject_tasks")
    page_b.wait_for_selector("#decision-form")
    assert page_b.title().startswith("Reject 1 onboarding task(s)")
    assert page_b.get_attribute("input[name=confirm_decision]", "value") == "Reject"
    assert "You are about to reject these tasks" in page_b.inner_text("#content")
    assert "Rejecte " not in page_b.inner_text("body")
    page_b.click("input[name=confirm_decision]")  # a rejection without a note is refused (by the form)
    assert page_b.locator("textarea[name=note]:invalid").count() == 1
    assert page_b.locator("#decision-form").count() == 1
    assert OnboardingTask.objects.get(pk=task.pk).state == S.AWAITING_APPROVAL
    page_b.fill("textarea[name=note]", "Wrong key alias in the ticket")
    page_b.click("input[name=confirm_decision]")
    page_b.wait_for_selector("text=Rejected 1 task(s): HERA KMS onboarding - UAT")
    page_b.screenshot(path=artifact("onboarding-reject.png"), full_page=False)

    # The list fits a 1400 px window: both people of the four-eyes pair are visible, nothing cut off.
    page_b.goto(f"{base}/admin/onboarding/onboardingtask/?environment__exact=UAT")
    table = page_b.locator("#result_list").bounding_box()
    results = page_b.locator("#changelist .results").bounding_box()
    assert table["x"] + table["width"] <= results["x"] + results["width"] + 1
    assert page_b.locator("#result_list tr", has_text="HERA KMS onboarding - UAT").locator(
        "td.field-four_eyes").inner_text() == "alice → bob"
    assert "illustrative" in page_b.inner_text("#result_list thead").lower()

    task = OnboardingTask.objects.get(pk=task.pk)
    assert (task.state, task.submitted_by) == (S.REJECTED, alice)
    decision = ApprovalDecision.objects.get(task=task)
    assert (decision.decided_by, decision.decision, decision.note) == (bob, "reject", "Wrong key alias in the ticket")
