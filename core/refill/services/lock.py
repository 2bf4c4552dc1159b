"""Single flight: a refill runs only while holding ``pg_advisory_lock(REFILL_LOCK_CLASS, pool_id)`` on
a database session of its own.

A session lock, not a transaction lock, because the run commits once per batch; the session is
ours alone, so the lock ends with it however the run ends (return, exception or SIGKILL: the
server drops the session when the socket closes)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from django.db import DEFAULT_DB_ALIAS, connection, connections

# First key of the two-key advisory lock (ASCII "refl"); the second key is the pool id. Anything
# else in the project that takes advisory locks uses a different first key.
REFILL_LOCK_CLASS = 0x7265666C


class LockSession:
    """A dedicated database session holding ``pg_advisory_lock(REFILL_LOCK_CLASS, pool_id)``."""

    def __init__(self, wrapper) -> None:
        self._wrapper = wrapper

    def alive(self) -> bool:
        try:
            with self._wrapper.cursor() as cursor:
                cursor.execute("SELECT 1")
            return True
        except Exception:
            return False


@contextmanager
def pool_lock(*, pool_id: int) -> Iterator[LockSession | None]:
    """Yield a live lock session, or ``None`` when another session holds the pool's lock.

    The session is separate from Django's connection so that nothing Django does to its own
    connection (closing it on error, health checks, ``close_old_connections`` in workers) can
    silently drop the lock mid-run, and so that closing it in ``finally`` always releases it."""
    base = connections[DEFAULT_DB_ALIAS]
    wrapper = type(base)(dict(base.settings_dict), DEFAULT_DB_ALIAS)
    try:
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [REFILL_LOCK_CLASS, pool_id])
            acquired = cursor.fetchone()[0]
        yield LockSession(wrapper) if acquired else None
    finally:
        try:
            # Closing the session releases its advisory locks; unlock first anyway so a pooled
            # or proxied connection (pgbouncer in session mode) never keeps it.
            if wrapper.connection is not None and not wrapper.connection.closed:
                with wrapper.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock_all()")
        except Exception:
            pass
        finally:
            wrapper.close()


def pool_refill_locked(*, pool_id: int) -> bool:
    """Whether some session currently holds ``pool_id``'s refill lock (for dashboards and tests)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 2"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))",
            [REFILL_LOCK_CLASS, pool_id],
        )
        return cursor.fetchone()[0]
