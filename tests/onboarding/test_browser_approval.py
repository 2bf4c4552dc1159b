"""Four-eyes approval in a real browser: staff user A submits a task, approver B approves it."""
from __future__ import annotations

import pytest

from core.onboarding.models import ApprovalDecision, OnboardingState as S, OnboardingTask
from tests.fixtures.browser import admin_login, artifact

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "browser-test-password"


def _run_action(page, base_url: str, task: OnboardingTask, action: str) -> None:
    page.goto(f"{base_url}/admin/core/onboardingtask/?environment__exact=UAT")
    page.check(f"input[name=_selected_action][value='{task.pk}']")
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")


def test_one_staff_user_submits_and_another_approves_in_the_admin(
        transactional_db, live_server, browser_page, make_onboarding_user, onboarding_plan):
    alice = make_onboarding_user("alice", password=PASSWORD)
    bob = make_onboarding_user("bob", approver=True, password=PASSWORD)
    task = onboarding_plan["kms-onboarding-uat"]
    base = live_server.url

    page_a = admin_login(browser_page(), live_server, "alice", PASSWORD)
    _run_action(page_a, base, task, "start_tasks")
    page_a.wait_for_selector("text=Started 1 task(s)")
    _run_action(page_a, base, task, "submit_tasks")
    page_a.wait_for_selector("text=Submitted 1 task(s)")
    # Alice has no approver permission: the admin does not even offer the action.
    assert "approve_tasks" not in page_a.inner_html("select[name=action]")
    assert OnboardingTask.objects.get(pk=task.pk).state == S.AWAITING_APPROVAL

    page_b = admin_login(browser_page(), live_server, "bob", PASSWORD)
    _run_action(page_b, base, task, "approve_tasks")
    page_b.wait_for_selector("#decision-form")
    page_b.fill("textarea[name=note]", "Verified the KMS onboarding ticket")
    page_b.click("input[name=confirm_decision]")
    page_b.wait_for_selector("text=Approved 1 task(s): HERA KMS onboarding - UAT")

    page_b.goto(f"{base}/admin/core/onboardingtask/summary/UAT/")
    page_b.wait_for_selector("#ob-progress")
    assert "1 of 4" in page_b.inner_text("#ob-progress")
    page_b.screenshot(path=artifact("onboarding-approval-summary.png"), full_page=True)

    task = OnboardingTask.objects.get(pk=task.pk)
    assert task.state == S.APPROVED
    assert task.submitted_by == alice and task.approved_by == bob
    decision = ApprovalDecision.objects.get(task=task)
    assert (decision.decided_by, decision.decision, decision.note) == (bob, "approve", "Verified the KMS onboarding ticket")
