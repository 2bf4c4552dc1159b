"""The per-request database health check (common/postgresql/base.py): a session the server
dropped while idle is replaced before the request's first query, and a healthy one costs no
``SELECT 1`` round trip."""
from __future__ import annotations

import select
import time

import psycopg
import pytest
from django.db import connection, connections


def _start_request() -> None:
    # What Django does on request_started: the next cursor runs the health check once.
    connection.close_if_unusable_or_obsolete()


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _admin_connection() -> psycopg.Connection:
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return psycopg.connect(**params, autocommit=True)


def test_the_project_runs_on_its_own_backend():
    assert type(connections["default"]).__module__ == "common.postgresql.base"
    assert connection.health_check_enabled


@pytest.mark.django_db(transaction=True)
def test_a_session_the_server_dropped_is_replaced_before_the_request_query():
    first = _backend_pid()
    with _admin_connection() as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [first]).fetchone()[0] is True
    poller = select.poll()
    poller.register(connection.connection.pgconn.socket, select.POLLIN | select.POLLHUP)
    deadline = time.monotonic() + 10
    while not poller.poll(50) and time.monotonic() < deadline:
        pass
    _start_request()
    second = _backend_pid()  # would raise OperationalError on the dropped session
    assert second != first


@pytest.mark.django_db(transaction=True)
def test_a_healthy_idle_session_is_kept_without_a_round_trip(monkeypatch):
    first = _backend_pid()
    calls = []
    original = connection.is_usable
    monkeypatch.setattr(connection, "is_usable", lambda: calls.append(1) or original())
    for _ in range(5):
        _start_request()
        assert _backend_pid() == first
    assert calls == []  # the socket poll said idle: no SELECT 1 was sent
