"""The go-live projection on the readiness page, in a real browser: dates, critical path, timeline."""
from __future__ import annotations

import pytest

from onboarding.projection import go_live_projection
from tests.fixtures.browser import admin_login, artifact

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "browser-test-password"


def test_readiness_page_shows_projected_dates_critical_path_and_timeline(
        transactional_db, live_server, browser_page, make_onboarding_user, onboarding_plan):
    make_onboarding_user("lead", password=PASSWORD)
    expected = go_live_projection().environments["PRODUCTION"]
    page = admin_login(browser_page(viewport={"width": 1400, "height": 900}), live_server, "lead", PASSWORD)
    page.goto(f"{live_server.url}/admin/onboarding/onboardingtask/summary/PRODUCTION/")
    page.wait_for_selector("#ob-projection")
    assert page.inner_text("#ob-projected-likely") == expected.likely.isoformat()
    assert page.inner_text("#ob-projected-late") == expected.late.isoformat()
    path = page.locator("#ob-critical-path li").all_inner_texts()
    assert [p.split(" — ")[0] for p in path] == [tp.task.title for tp in expected.critical_path]
    # The timeline: one bar per common task of both environments, the critical path in its own colour.
    gantt = page.locator("#ob-gantt")
    assert gantt.is_visible() and gantt.bounding_box()["width"] > 600
    assert page.locator("#ob-gantt g.gantt-row[data-env=UAT]").count() == 4
    assert page.locator("#ob-gantt g.gantt-row[data-env=PRODUCTION]").count() == 4
    assert page.locator("#ob-gantt rect.bar.critical").count() >= len(expected.critical_path)
    assert page.locator("#ob-gantt g.gantt-milestone").count() == 2
    page.screenshot(path=artifact("onboarding-projection.png"), full_page=True)
    with page.expect_download() as download:
        page.click("#ob-export-ics")
    assert download.value.suggested_filename == "tokenpool-go-live-projection.ics"
