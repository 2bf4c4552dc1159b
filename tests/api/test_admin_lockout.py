"""Admin login brute force (issue 10 #7, contract section 3): django-axes locks a username or a client
address after 10 failures within 15 minutes (429 and a page saying so), even for the right password,
until `manage.py axes_reset…` or the cool-off."""
from __future__ import annotations

import pytest
from django.core.management import call_command
from django.test import Client

PASSWORD = "correct-horse-battery-staple"
LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("ops", password=PASSWORD, is_staff=True, is_superuser=True)


def login(username: str, password: str, *, address: str) -> object:
    return Client(REMOTE_ADDR=address).post(LOGIN, {"username": username, "password": password})


def assert_signed_in(response) -> None:
    assert response.status_code == 302 and response["Location"] == "/admin/"


def test_ten_wrong_passwords_lock_the_username_even_for_the_right_one(staff):
    statuses = [login("ops", f"wrong-{attempt}", address=f"10.0.0.{attempt}").status_code  # a new address each time
                for attempt in range(10)]
    assert statuses == [200] * 9 + [429]  # the form again with its error; the 10th failure locks
    locked = login("ops", PASSWORD, address="10.9.9.9")
    assert locked.status_code == 429
    page = locked.content.decode()
    assert "Sign-in temporarily locked" in page and "axes_reset" in page
    call_command("axes_reset_username", "ops")
    assert_signed_in(login("ops", PASSWORD, address="10.9.9.9"))


def test_ten_failures_from_one_address_lock_that_address_for_every_username(staff):
    statuses = [login(f"guess-{attempt}", "nope", address="192.0.2.7").status_code for attempt in range(10)]
    assert statuses == [200] * 9 + [429]
    assert login("ops", PASSWORD, address="192.0.2.7").status_code == 429
    assert_signed_in(login("ops", PASSWORD, address="192.0.2.8"))  # the username itself is not locked
    call_command("axes_reset")
    assert_signed_in(login("ops", PASSWORD, address="192.0.2.7"))


def test_nine_failures_then_success_resets_the_count(staff):
    for attempt in range(9):
        login("ops", f"wrong-{attempt}", address="198.51.100.1")
    assert_signed_in(login("ops", PASSWORD, address="198.51.100.1"))
    for attempt in range(9):
        assert login("ops", f"again-{attempt}", address="198.51.100.1").status_code == 200
    assert_signed_in(login("ops", PASSWORD, address="198.51.100.1"))
