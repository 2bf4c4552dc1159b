"""Issue 21.5: the refill runs, token pairs and alerts lists fit a 1400 px window with realistic rows
(a long pool name, a long refill error, long key and user names): nothing scrolls sideways, and the
refill error is on screen (it used to be off to the right)."""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from keys.services import api_key_create
from monitoring.models import AlertCondition, AlertSeverity, PoolAlert
from pool.models import PairStatus, TokenPair
from refill.models import RefillOutcome, RefillRun, RefillTrigger
from tests.fixtures.browser import admin_login, artifact

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "browser-test-password"
WIDTH = 1400
ERROR = ("TomeUnavailable: NS2 tokenize failed after 3 attempts (HTTP 503 from http://127.0.0.1:8900/v1/ns2/"
         "tokenize, correlation 5f0c1c2e-7a59-4e0b-9d0b-2f51f0e1f3aa); the run stopped with 0 of 5000 pairs and "
         "the pool stays below its low watermark until the next refill")


def _rows(pool, user) -> None:
    now = timezone.now()
    RefillRun.objects.create(pool=pool, trigger=RefillTrigger.LOW_WATERMARK, outcome=RefillOutcome.FAILED,
                             requested=5000, tome_calls=6, tome_seconds=12.3456, db_seconds=0.0123,
                             error=ERROR, correlation_id=str(uuid.uuid4()), finished_at=now + timedelta(seconds=14))
    RefillRun.objects.create(id=1_234_567, pool=pool, trigger=RefillTrigger.LOW_WATERMARK,
                             outcome=RefillOutcome.SKIPPED_LOCKED, finished_at=now)  # the longest outcome label
    key, _ = api_key_create(name="billing-reconciliation-batch-service", scopes=["reserve"],
                            consumer_name="billing-and-reconciliation-team")
    for pk in TokenPair.objects.filter(pool=pool).values_list("id", flat=True)[:5]:
        TokenPair.objects.filter(pk=pk).update(status=PairStatus.USED, reserved_by=key, reservation_id=uuid.uuid4(),
                                               reserved_at=now, expires_at=now + timedelta(minutes=15), used_at=now)
    PoolAlert.objects.create(pool=pool, condition=AlertCondition.REFILL_FAILING, severity=AlertSeverity.CRITICAL,
                             opened_at=now - timedelta(hours=2), resolved_at=now, acknowledged_by=user,
                             acknowledged_at=now - timedelta(hours=1), last_notified_at=now,
                             details={"failures": 3})


def test_refill_runs_token_pairs_and_alerts_fit_a_1400_px_window(transactional_db, live_server, browser_page,
                                                                    django_user_model, make_pool):
    user = django_user_model.objects.create_superuser("operations-engineer-on-call", "ops@example.test", PASSWORD)
    pool = make_pool("card-issuing-production-eu-west-primary", pairs=20)
    _rows(pool, user)
    page = admin_login(browser_page(viewport={"width": WIDTH, "height": 900}), live_server,
                       "operations-engineer-on-call", PASSWORD)
    for path, name in (("refill/refillrun", "refill-runs"), ("pool/tokenpair", "token-pairs"),
                       ("monitoring/poolalert", "alerts")):
        page.goto(f"{live_server.url}/admin/{path}/")
        page.wait_for_selector("#result_list tbody tr")
        page.screenshot(path=artifact(f"admin-list-{name}.png"), full_page=True)
        # The page does not scroll sideways, nor does the table inside its own scrolling box (the admin's
        # .results div), which is how a too-wide list used to hide its last columns.
        page_width, table_width, box_width = page.evaluate(
            "[document.documentElement.scrollWidth, document.querySelector('#changelist .results').scrollWidth, "
            "document.querySelector('#changelist .results').clientWidth]")
        assert page_width <= WIDTH, f"/admin/{path}/ is {page_width} px wide"
        assert table_width <= box_width, f"/admin/{path}/: a {table_width} px table in a {box_width} px box"
        assert "card-issuing-production-eu-west-primary" in page.inner_text("#result_list")
    page.goto(f"{live_server.url}/admin/refill/refillrun/")
    error_cell = page.locator("#result_list tr", has_text="Failed").locator("td.field-error_short")
    box, results = error_cell.bounding_box(), page.locator("#changelist .results").bounding_box()
    assert box is not None and results is not None
    assert box["x"] + box["width"] <= results["x"] + results["width"] <= WIDTH  # the error is on screen
    assert "TomeUnavailable: NS2 tokenize failed" in error_cell.inner_text()
    assert error_cell.locator("[title]").first.get_attribute("title") == ERROR  # all of it, on hover
