"""The consumer adoption page in a real browser: the summary line, a row per team, a planned date saved."""
from __future__ import annotations

import uuid
from datetime import date, timedelta

import pytest
from django.utils import timezone

from keys.services import api_key_create
from monitoring.models import ConsumerAdoption
from pool.models import PairSource, PairStatus, TokenPair
from tests.fixtures.browser import admin_login, artifact

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "browser-test-password"


def test_adoption_page_shows_each_team_and_saves_a_planned_date(
        transactional_db, live_server, browser_page, django_user_model, make_pool):
    django_user_model.objects.create_superuser("lead", "lead@example.test", PASSWORD)
    pool = make_pool("adoption", pairs=50)
    billing, _ = api_key_create(name="billing", scopes=["reserve"])
    api_key_create(name="ledger", scopes=["reserve"])
    at = timezone.now() - timedelta(hours=1)
    for pk in list(TokenPair.objects.filter(pool=pool).values_list("id", flat=True)[:14]):
        TokenPair.objects.filter(pk=pk).update(status=PairStatus.USED, reserved_by=billing, reservation_id=uuid.uuid4(),
                                               reserved_at=at, expires_at=at + timedelta(minutes=15), used_at=at)
    TokenPair.objects.create(pool=pool, internal_token="d-1", external_ref_id="x-1", status=PairStatus.USED,
                             source=PairSource.DIRECT, reserved_by=billing, reservation_id=uuid.uuid4(),
                             reserved_at=at, expires_at=at + timedelta(minutes=15), used_at=at)

    page = admin_login(browser_page(viewport={"width": 1400, "height": 900}), live_server, "lead", PASSWORD)
    page.goto(f"{live_server.url}/admin/dashboard/")
    page.click("text=Consumer adoption")
    page.wait_for_selector("#adoption-summary")
    summary = page.inner_text("#adoption-summary")
    assert summary.startswith("1 of 2 teams on the pool,") and "TOME calls/day saved" in summary
    row = page.locator("tr[data-consumer=billing]")
    assert row.locator(".ad-approach").inner_text() == "pool"
    assert row.locator(".ad-cards").get_attribute("data-value") == f"{15 / 7:.2f}"
    assert "7%" in row.inner_text()  # 1 of 15 cards through the fallback
    assert row.locator(".ad-spark rect").count() == 14  # 7 days × (pool, fallback)
    assert page.locator("tr[data-consumer=ledger] .ad-approach").inner_text() == "no calls yet"
    assert "Library-only teams cannot be told apart here" in page.inner_text("#adoption-library-only")
    table = page.locator("#adoption-table").bounding_box()
    assert table["x"] + table["width"] <= 1400  # fits the window

    ledger = page.locator("tr[data-consumer=ledger]")
    ledger.locator("input[type=date]").fill("2027-03-01")
    ledger.locator("button[type=submit]").click()
    page.wait_for_selector("text=Planned adoption date of ledger: 2027-03-01.")
    page.screenshot(path=artifact("consumer-adoption.png"), full_page=True)
    assert ConsumerAdoption.objects.get(consumer__name="ledger").planned_adoption_date == date(2027, 3, 1)
