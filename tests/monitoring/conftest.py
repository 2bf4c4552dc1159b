"""Monitoring tests log into the admin a lot; a cheap hasher keeps that from dominating their time."""
import pytest


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
