"""/api/docs/ in a real browser with every request off this server blocked (no internet): Swagger UI
renders every operation from the project's own files, and the Content-Security-Policy blocks nothing
it needs. The admin login page likewise loads only its own files."""
from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.fixtures.browser import artifact

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def offline_page(browser_page, live_server):
    page = browser_page(viewport={"width": 1280, "height": 900})
    ours = urlsplit(live_server.url).netloc
    foreign: list[str] = []
    problems: list[str] = []

    def route(route):
        if urlsplit(route.request.url).netloc == ours:
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    page.route("**/*", route)
    page.on("console", lambda message: problems.append(message.text)
            if message.type == "error" or "Content Security Policy" in message.text else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    return page, foreign, problems


def test_swagger_ui_works_offline_under_the_csp(transactional_db, live_server, browser_page):
    page, foreign, problems = offline_page(browser_page, live_server)
    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    paths = {text.strip().replace("\u200b", "") for text in page.locator(".opblock-summary-path").all_inner_texts()}
    assert {"/api/v1/reservations", "/api/v1/lookup", "/api/v1/pools/{name}"} <= paths
    page.screenshot(path=artifact("api-docs-offline.png"))
    assert foreign == []
    assert not [p for p in problems if "Content Security Policy" in p], problems


def test_admin_login_loads_only_its_own_files(transactional_db, live_server, browser_page):
    page, foreign, problems = offline_page(browser_page, live_server)
    page.goto(f"{live_server.url}/admin/login/")
    assert page.locator("#id_username").is_visible()
    assert foreign == [] and problems == []
