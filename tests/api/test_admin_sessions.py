"""Admin sessions (issue 20, finding 6; contract section 3): 15 minutes idle, 8 hours in all, then log in again."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from api.site_middleware import SESSION_STARTED_KEY

PASSWORD = "correct-horse-battery-staple"

pytestmark = pytest.mark.django_db


@pytest.fixture
def signed_in(django_user_model) -> Client:
    django_user_model.objects.create_user("ops", password=PASSWORD, is_staff=True, is_superuser=True)
    client = Client()
    response = client.post("/admin/login/?next=/admin/", {"username": "ops", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/admin/"
    return client


def _session(client: Client) -> Session:
    return Session.objects.get(session_key=client.cookies[settings.SESSION_COOKIE_NAME].value)


def _is_login_redirect(response) -> bool:
    return response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_settings_are_fifteen_minutes_idle_and_eight_hours_absolute():
    assert (settings.SESSION_COOKIE_AGE, settings.SESSION_SAVE_EVERY_REQUEST) == (900, True)
    assert settings.SESSION_ABSOLUTE_SECONDS == 8 * 3600


def test_every_request_pushes_the_idle_expiry_on_both_sides(signed_in):
    response = signed_in.get("/admin/")
    assert response.status_code == 200
    cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert int(cookie["max-age"]) == 900  # not Django's default 14 days
    expiry = _session(signed_in).expire_date
    assert timedelta(minutes=14) < expiry - timezone.now() <= timedelta(minutes=15)


def test_an_idle_session_ends_and_the_admin_asks_for_the_password(signed_in):
    assert signed_in.get("/admin/").status_code == 200
    # 15 minutes without a request: the server-side row has expired (whatever the browser still sends).
    Session.objects.filter(pk=_session(signed_in).pk).update(expire_date=timezone.now() - timedelta(seconds=1))
    assert _is_login_redirect(signed_in.get("/admin/"))


def test_an_active_session_still_ends_after_eight_hours(signed_in):
    assert signed_in.get("/admin/").status_code == 200
    session = signed_in.session
    assert time.time() - session[SESSION_STARTED_KEY] < 60  # the login request started the clock
    session[SESSION_STARTED_KEY] = time.time() - 8 * 3600 + 60  # 7 h 59 min ago: still fine
    session.save()
    assert signed_in.get("/admin/").status_code == 200
    session = signed_in.session
    session[SESSION_STARTED_KEY] = time.time() - 8 * 3600 - 1
    session.save()
    assert _is_login_redirect(signed_in.get("/admin/"))
    assert _is_login_redirect(signed_in.get("/admin/"))  # logged out for good, not for one request
    # Logging in again starts a new 8 hours.
    assert signed_in.post("/admin/login/?next=/admin/", {"username": "ops", "password": PASSWORD}).status_code == 302
    assert signed_in.get("/admin/").status_code == 200
