"""Suite-wide fixtures. Domain fixtures live in tests/fixtures/<domain>.py and register here."""
from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.fixtures.tome",
    "tests.fixtures.pool",
    "tests.fixtures.refill",
    "tests.fixtures.onboarding",
    "tests.fixtures.monitoring",
    "tests.fixtures.browser",
]


@pytest.fixture(scope="session")
def django_db_modify_db_settings() -> None:
    """One test database per pytest process, so parallel runs on one embedded server never collide."""
    from django.conf import settings

    if "TEST_DATABASE_NAME" not in os.environ:
        settings.DATABASES["default"]["TEST"]["NAME"] = f"test_tokenpool_{os.getpid()}"
