"""A client-side deadline for queries, so a request fails fast when PostgreSQL stops answering.

A server that is frozen (SIGSTOP, a paused container or VM, a stuck storage layer) still has a kernel
that accepts connections and acknowledges bytes: no TCP timeout, keepalive or server-side
``statement_timeout`` ever fires, and a query simply never returns. ``query_deadline(seconds)``
installs an execute wrapper on the thread's connection; one watchdog thread per process shuts down
the socket of any query still running past its deadline. psycopg then sees the connection closed
and raises ``OperationalError`` (→ 503 ``database_unavailable`` through api/errors.py); the broken
connection is discarded at the end of the request and the next request connects afresh (libpq's
``connect_timeout`` bounds that), so everything recovers without a restart when the server thaws.

Used around HTTP requests (``api.middleware.DatabaseDeadlineMiddleware``) and the readiness check,
not around background work (refills, migrations), whose queries may legitimately run longer."""
from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from django.db import connection as default_connection

logger = logging.getLogger(__name__)

# How often the watchdog looks at running queries: a frozen query is cut within deadline + this.
_TICK_SECONDS = 0.1


class _Watchdog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, tuple[int, float]] = {}  # ticket -> (socket fd, monotonic deadline)
        self._next_ticket = 0
        self._thread: threading.Thread | None = None
        self._pid = 0

    def watch(self, fd: int, seconds: float) -> int:
        with self._lock:
            if self._thread is None or self._pid != os.getpid():  # started lazily, again after a fork
                self._running.clear()
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._loop, name="db-query-deadline", daemon=True)
                self._thread.start()
            self._next_ticket += 1
            self._running[self._next_ticket] = (fd, time.monotonic() + seconds)
            return self._next_ticket

    def unwatch(self, ticket: int) -> None:
        with self._lock:  # once this returns, the watchdog can no longer touch that socket
            self._running.pop(ticket, None)

    def _loop(self) -> None:
        while True:
            time.sleep(_TICK_SECONDS)
            now = time.monotonic()
            with self._lock:
                overdue = [(ticket, fd) for ticket, (fd, deadline) in self._running.items() if deadline <= now]
                for ticket, fd in overdue:
                    del self._running[ticket]
                    _shut_down(fd)


def _shut_down(fd: int) -> None:
    """Shut the connection's socket down (both ways): the blocked read returns at once with EOF."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
        logger.warning("database query deadline passed; connection cut", extra={"fd": fd})
    except OSError:
        pass
    finally:
        sock.close()  # closes only the duplicate descriptor; the shutdown already applies to the socket


_watchdog = _Watchdog()
_active = threading.local()  # .seconds: the deadline of this thread's queries, while a block is open


@contextmanager
def watched(raw_connection: Any) -> Iterator[None]:
    """Cut ``raw_connection`` (psycopg) off if the enclosed round trip outlasts this thread's deadline
    (no-op outside ``query_deadline``). The database backend wraps COMMIT and ROLLBACK in it too."""
    seconds = getattr(_active, "seconds", 0.0)
    fd = -1
    if seconds > 0 and raw_connection is not None:
        try:
            fd = raw_connection.pgconn.socket
        except Exception:  # no socket (closed): the call fails on its own, immediately
            fd = -1
    if fd < 0:
        yield
        return
    ticket = _watchdog.watch(fd, seconds)
    try:
        yield
    finally:
        _watchdog.unwatch(ticket)


def _execute_watched(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    with watched(context["connection"].connection):
        return execute(sql, params, many, context)


@contextmanager
def query_deadline(seconds: float, *, connection: Any = default_connection) -> Iterator[None]:
    """Every query, COMMIT and ROLLBACK on ``connection`` (this thread's) inside the block is cut off
    after ``seconds`` (0 or less: no deadline)."""
    if seconds <= 0:
        yield
        return
    previous = getattr(_active, "seconds", 0.0), getattr(_active, "connect_failed", False)
    _active.seconds, _active.connect_failed = seconds, False
    try:
        with connection.execute_wrapper(_execute_watched):
            yield
    finally:
        _active.seconds, _active.connect_failed = previous


@contextmanager
def connecting(conn_params: dict[str, Any], *, seconds: float) -> Iterator[None]:
    """Around opening a connection inside this thread's ``query_deadline`` block.

    First the server must answer a one-packet handshake within ``seconds`` (``server_answers``): a
    frozen server's kernel accepts the connection and libpq would then wait inside a call that
    cannot be interrupted (measured: 90 s, the worker's heartbeat stalled with it, despite
    connect_timeout). And once an attempt failed, further attempts in the same block fail at once,
    so a request that touches the database several times still answers within one timeout."""
    if getattr(_active, "seconds", 0.0) <= 0:
        yield
        return
    if getattr(_active, "connect_failed", False):
        raise psycopg.OperationalError("the database did not answer earlier in this request")
    try:
        if not server_answers(conn_params, seconds=seconds):
            raise psycopg.OperationalError(f"the database did not answer within {seconds:g} s")
        yield
    except Exception:
        _active.connect_failed = True
        raise


# SSLRequest (protocol 1234.5679): the server (or PgBouncer) answers one byte, 'S' or 'N', before any
# authentication; closing right after it is not logged by PostgreSQL.
_SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def server_answers(conn_params: dict[str, Any], *, seconds: float) -> bool:
    """Whether the server at ``conn_params``' host/port answers an SSLRequest within ``seconds``.
    Unknown targets (several hosts, a service file) are not probed: True."""
    host = str(conn_params.get("host") or "/var/run/postgresql")
    port = int(conn_params.get("port") or 5432)
    if "," in host:
        return True
    try:
        if host.startswith("/"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(seconds)
            sock.connect(f"{host}/.s.PGSQL.{port}")
        else:
            sock = socket.create_connection((host, port), timeout=seconds)
    except OSError:
        return True  # refused or unreachable: libpq says so itself, at once
    try:
        sock.settimeout(seconds)
        sock.sendall(_SSL_REQUEST)
        sock.recv(1)  # an answer, or the server closing: either way it is running
        return True
    except TimeoutError:
        return False
    except OSError:
        return True
    finally:
        sock.close()
