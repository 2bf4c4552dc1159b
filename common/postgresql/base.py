"""Django's PostgreSQL backend with a health check that costs no round trip.

``CONN_HEALTH_CHECKS`` makes Django run ``SELECT 1`` before the first query of every request: one
more round trip on each reservation (the hot path's only other one is the claim itself). What the
check exists for is a connection the server has dropped while it sat idle between requests (a
restart, a failover, ``pg_terminate_backend``, ``idle_session_timeout``). When the server drops a
session it sends a FATAL message and closes its end, so an idle connection's socket turns
readable; on a healthy idle autocommit connection nothing arrives. A zero-timeout ``poll()`` of the
socket sees that for a system call's cost, and only then does the real ``SELECT 1`` run (and fail,
and the connection is replaced before the request's query, as with Django's own check).

What it cannot see, Django's check could not fix either: a peer that vanished without closing the
connection (a network partition) makes ``SELECT 1`` block until the TCP timeout just like the
request's own query would.
"""
from __future__ import annotations

import select

from django.db.backends.postgresql import base as postgresql

from common.postgresql.deadline import connecting, watched


class DatabaseWrapper(postgresql.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict) -> object:
        seconds = float(conn_params.get("connect_timeout") or 2)
        with connecting(conn_params, seconds=seconds):
            return super().get_new_connection(conn_params)

    # COMMIT and ROLLBACK bypass execute wrappers: the request's query deadline covers them here.
    def _commit(self) -> None:
        with watched(self.connection):
            super()._commit()

    def _rollback(self) -> None:
        with watched(self.connection):
            super()._rollback()

    def close_if_health_check_failed(self) -> None:
        if self.pool or self.connection is None or not self.health_check_enabled or self.health_check_done:
            return super().close_if_health_check_failed()
        if self._server_spoke_while_idle() and not self.is_usable():
            self.close()
        self.health_check_done = True

    def _server_spoke_while_idle(self) -> bool:
        """True when the socket has something to read (a FATAL notice, EOF, a hang-up) or when
        psycopg already knows the connection is unusable."""
        connection = self.connection
        if connection.closed or connection.broken:
            return True
        try:
            fd = connection.pgconn.socket
        except Exception:  # libpq has no socket any more: certainly not healthy
            return True
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
