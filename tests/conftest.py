"""Suite-wide fixtures. Domain fixtures live in tests/fixtures/<domain>.py and register here.

- The fast password hasher for the whole run (PBKDF2 at its production cost is ~0.5 s per hash here).
- ``run_concurrently(*targets, threads=None)``: the one harness for concurrency tests.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

pytest_plugins = [
    "tests.fixtures.tome",
    "tests.fixtures.pool",
    "tests.fixtures.refill",
    "tests.fixtures.onboarding",
    "tests.fixtures.monitoring",
    "tests.fixtures.browser",
    "tests.fixtures.redis", "tests.fixtures.pgbouncer",  # real redis-server / pgbouncer on free ports
]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """`make test` leaves no PostgreSQL behind: the embedded server this run started stops with it,
    unless another client (another test run, a `make run` started meanwhile) still uses it."""
    from devtools import embedded_db

    if embedded_db.started_here():
        embedded_db.stop_if_unused()
        embedded_db.on_exit("quiet")


@pytest.fixture(scope="session")
def django_db_modify_db_settings() -> None:
    """One test database per pytest process, so parallel runs on one embedded server never collide."""
    from django.conf import settings

    if "TEST_DATABASE_NAME" not in os.environ:
        settings.DATABASES["default"]["TEST"]["NAME"] = f"test_tokenpool_{os.getpid()}"


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hashing(django_test_environment: None) -> Iterator[None]:
    """Tests log in and create users with passwords all the time; none of them tests the hash cost."""
    from django.test import override_settings

    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture
def run_concurrently() -> Callable[..., list[Any]]:
    """``run_concurrently(f, threads=8)`` or ``run_concurrently(f, g)``: runs each target in its own
    thread, holds them at a ``threading.Barrier`` until all have started so they really race, and
    returns their results in order. Each thread gets its own database connection (Django's are per
    thread) and closes it afterwards, or the test database could not be dropped. The first exception
    a target raised is re-raised here, after every thread has finished.

    Needs ``django_db(transaction=True)``: the threads must see rows the test committed."""

    def run(*targets: Callable[[], T], threads: int | None = None, timeout: float = 120.0) -> list[T]:
        if threads is not None:
            assert len(targets) == 1, "threads= repeats one target"
            targets = targets * threads
        barrier = threading.Barrier(len(targets))

        def wrapped(target: Callable[[], T]) -> T:
            from django.db import connections

            try:
                barrier.wait(timeout=timeout)
                return target()
            finally:
                connections.close_all()

        with ThreadPoolExecutor(max_workers=len(targets)) as executor:
            futures = [executor.submit(wrapped, target) for target in targets]
            outcomes = [f.exception(timeout=timeout) for f in futures]
        for outcome in outcomes:
            if outcome is not None:
                raise outcome
        return [f.result() for f in futures]

    return run
