"""api/site_middleware.py: the browser-only middleware steps aside for /api/v1/, and only there.

Requests go through ``tokenpool.wsgi.application`` itself (what gunicorn serves), in process."""
from __future__ import annotations

import io
import json
import sys

import pytest
from django.conf import settings


def _call(path: str, *, method: str = "GET", body: bytes = b"", headers: dict[str, str] | None = None):
    from tokenpool.wsgi import application

    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "SERVER_NAME": "testserver", "SERVER_PORT": "80",
               "HTTP_HOST": "testserver", "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http",
               "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "CONTENT_LENGTH": str(len(body)),
               "CONTENT_TYPE": "application/json", **(headers or {})}
    started: list = []
    result = application(environ, lambda status, response_headers: started.append((status, response_headers)))
    try:
        content = b"".join(result)
    finally:
        result.close()
    status, response_headers = started[0]
    return int(status.split()[0]), response_headers, content


def test_the_browser_middleware_steps_aside_for_the_api_and_only_for_it():
    from django.contrib.sessions.middleware import SessionMiddleware
    from django.test import RequestFactory
    from whitenoise.middleware import WhiteNoiseMiddleware

    from api import site_middleware

    # Each wrapper is the middleware it wraps (Django's and the admin's checks find it by class).
    assert issubclass(site_middleware.SessionMiddleware, SessionMiddleware)
    assert issubclass(site_middleware.WhiteNoiseMiddleware, WhiteNoiseMiddleware)
    assert "api.site_middleware.SessionMiddleware" in settings.MIDDLEWARE
    assert "django.contrib.sessions.middleware.SessionMiddleware" not in settings.MIDDLEWARE
    calls: list[str] = []
    session = site_middleware.SessionMiddleware(lambda request: calls.append(request.path) or object())
    api_request, site_request = RequestFactory().get("/api/v1/pools/default"), RequestFactory().get("/admin/")
    session(api_request)
    assert not hasattr(api_request, "session") and calls == ["/api/v1/pools/default"]
    session(site_request)
    assert hasattr(site_request, "session")


@pytest.mark.django_db(transaction=True)  # the handler checks connections at request end: no test transaction
def test_a_reservation_through_the_split_application(make_pool, make_api_key):
    pool = make_pool(pairs=3)
    _, raw = make_api_key()
    status, headers, content = _call("/api/v1/reservations", method="POST",
                                     body=json.dumps({"pool": pool.name}).encode(),
                                     headers={"HTTP_AUTHORIZATION": f"Api-Key {raw}"})
    names = {name.lower(): value for name, value in headers}
    assert status == 201, content
    assert json.loads(content)["internal_token"]
    assert names["cache-control"] == "no-store"
    assert names["x-content-type-options"] == "nosniff"  # SecurityMiddleware still runs
    assert "set-cookie" not in names and "content-security-policy" not in names
    status, _, content = _call("/api/v1/reservations", method="POST", body=b"{}")
    assert status == 401 and json.loads(content)["code"] == "not_authenticated"


@pytest.mark.django_db(transaction=True)  # the handler checks connections at request end: no test transaction
def test_the_admin_still_gets_sessions_csrf_and_csp():
    status, headers, _ = _call("/admin/login/")
    names = {name.lower(): value for name, value in headers}
    assert status == 200
    assert "csrftoken" in names.get("set-cookie", "")
    assert "content-security-policy" in names
    status, _, _ = _call("/admin/login/", method="POST", body=b"username=a&password=b",
                         headers={"CONTENT_TYPE": "application/x-www-form-urlencoded"})
    assert status == 403  # no CSRF token: refused by the site stack's CsrfViewMiddleware
