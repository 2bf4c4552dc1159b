"""Headers and settings of issue 10 #8: Cache-Control on the API, CSP and self-hosted assets on the
admin and the docs, `check --deploy` clean in production, development secrets refused."""
from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys

import pytest
from django.contrib.staticfiles import finders

from tests.fixtures.processes import ROOT

EXTERNAL_ASSET = re.compile(r"""<(?:script|link|img)\b[^>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.IGNORECASE)
ASSET = re.compile(r"""<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


@pytest.mark.parametrize("method, path, body, status", [
    ("post", "/api/v1/reservations", {}, 201),
    ("get", "/api/v1/pools/default", None, 200),
    ("get", "/api/v1/pools/nope", None, 404),
    ("get", "/api/v1/nothing-here", None, 404),
    ("delete", "/api/v1/reservations", None, 405),
    ("post", "/api/v1/lookup", {"internal_token": "x" * 70000}, 413),
    ("post", "/api/v1/lookup", {"internal_token": "bad token"}, 400),
])
def test_every_api_response_says_no_store(api, default_pool, method, path, body, status):
    response = api.post(path, body) if method == "post" else getattr(api.client, method)(path)
    assert response.status_code == status
    assert response["Cache-Control"] == "no-store"


def test_unauthenticated_and_throttled_api_responses_say_no_store_too(api_as, default_pool, settings):
    settings.API_AUTH_FAILURE_RATE_PER_MINUTE = 1
    guesser = api_as("AbCdEfGh.guess")
    assert [guesser.post("/api/v1/reservations").status_code for _ in range(2)] == [401, 429]
    assert guesser.post("/api/v1/reservations")["Cache-Control"] == "no-store"
    assert api_as(None).get("/api/v1/pools/default")["Cache-Control"] == "no-store"


def _assets_of(html: str) -> list[str]:
    return [url for url in ASSET.findall(html) if not url.startswith("#")]


@pytest.mark.parametrize("path", ["/api/docs/", "/admin/login/"])
def test_docs_and_admin_have_a_csp_and_only_our_own_assets(client, db, path):
    response = client.get(path)
    assert response.status_code == 200
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    html = response.content.decode()
    assert not EXTERNAL_ASSET.search(html), EXTERNAL_ASSET.search(html)
    assert "<script>" not in html.replace(" ", "")  # no inline script: CSP script-src 'self' would block it
    assets = _assets_of(html)
    assert assets
    for url in assets:
        if url.startswith("/static/"):
            assert finders.find(url.removeprefix("/static/")), f"{url} is not a file of this project"


def test_the_docs_start_up_script_is_served_and_points_at_our_schema(client, db):
    html = client.get("/api/docs/").content.decode()
    scripts = [url for url in _assets_of(html) if not url.startswith("/static/")]
    assert scripts, html  # the split view's own script, served by the project
    script = client.get(scripts[0])
    assert script.status_code == 200 and b"/api/schema/" in script.content and b"SwaggerUIBundle" in script.content


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    from django.db import connection

    child = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "TOKENPOOL_ENV")}
    child.update(EMBEDDED_DATABASE_NAME=connection.settings_dict["NAME"], DJANGO_SETTINGS_MODULE="tokenpool.settings")
    if os.environ.get("DATABASE_URL"):
        child["DATABASE_URL"] = os.environ["DATABASE_URL"]
    child.update(env)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=child, capture_output=True,
                          text=True, timeout=120, check=False)


def test_check_deploy_is_clean_with_production_settings(db):
    result = _manage("check", "--deploy", "--fail-level", "WARNING", TOKENPOOL_ENV="production",
                     SECRET_KEY=secrets.token_urlsafe(50), ALLOWED_HOSTS="tokenpool.example")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize("env, message", [
    ({"SECRET_KEY": "dev-insecure-tokenpool-secret-change-me"}, "published development default"),
    ({"SECRET_KEY": "django-insecure-abc"}, "published development default"),
    ({"TOKENPOOL_ENV": "production"}, "SECRET_KEY must be set"),
    ({"TOKENPOOL_ENV": "production", "SECRET_KEY": "short"}, "at least 50"),
    # what docker/compose.yaml used to ship, and a long placeholder that passes the length rule
    ({"SECRET_KEY": "change-me-in-production"}, "published development default or placeholder"),
    ({"TOKENPOOL_ENV": "production", "SECRET_KEY": "change-me-in-production-" + secrets.token_urlsafe(50)},
     "published development default or placeholder"),
])
def test_development_secrets_are_refused_at_startup(db, env, message):
    result = _manage("check", **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr


def test_a_placeholder_secret_still_runs_development_with_debug_on(db):
    result = _manage("check", SECRET_KEY="change-me-in-production", DEBUG="1")
    assert result.returncode == 0, result.stdout + result.stderr


def test_development_uses_a_random_per_checkout_secret(settings):
    if os.environ.get("SECRET_KEY"):
        pytest.skip("SECRET_KEY set in this environment")
    stored = (ROOT / "var" / "secret-key.txt").read_text().strip()
    assert settings.SECRET_KEY == stored and len(stored) >= 50
    assert (ROOT / "var" / "secret-key.txt").stat().st_mode & 0o077 == 0


def test_json_api_responses_carry_no_csp_but_html_pages_do(api, default_pool, client):
    """The policy protects pages a browser renders; building it on every JSON response cost about a
    tenth of a reservation's CPU (docs/benchmarks.md "The HTTP path")."""
    reserved = api.post("/api/v1/reservations", {})
    assert reserved.status_code == 201 and "json" in reserved["Content-Type"]
    assert "Content-Security-Policy" not in reserved
    assert "Content-Security-Policy" not in api.client.get("/api/v1/nothing-here")  # JSON errors too
    assert "default-src 'self'" in client.get("/admin/login/")["Content-Security-Policy"]


def test_the_site_serves_its_own_favicon(client):
    """Browsers ask every page's origin for /favicon.ico; a 404 there is a console error on every admin page."""
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/x-icon"
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert body[:4] == b"\0\0\1\0"  # an ICO header, the file in tokenpool/site_root
