"""Single flight: a refill runs only while holding ``pg_try_advisory_xact_lock(REFILL_LOCK_CLASS,
pool_id)`` inside a transaction of its own, on a database session of its own, left open for the run.

A transaction-scoped lock held by a transaction that stays open, not a session lock: behind
PgBouncer in transaction mode a session lock would stay on whichever server session ran the
statement, outlive the run and be "re-acquired" by anyone handed that session next, while an open
transaction pins its server session to us until it ends (docs/operations.md "Scaling out"). The
run commits its batches on Django's connection, never on this one. The lock ends with the
transaction however the run ends: rollback in ``finally``, or the server ending the session when
the socket closes (SIGKILL), or ``idle_in_transaction_session_timeout`` (set to the run lease here)
if the worker hangs. The open transaction has no xid and no snapshot between statements, so it
holds back no VACUUM (checked: ``backend_xmin`` is null)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, cast

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

# First key of the two-key advisory lock (ASCII "refl"); the second key is the pool id. Anything
# else in the project that takes advisory locks uses a different first key.
REFILL_LOCK_CLASS = 0x7265666C


class LockSession:
    """A dedicated database session whose open transaction holds the pool's advisory lock."""

    def __init__(self, wrapper: BaseDatabaseWrapper) -> None:
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
    silently drop the lock mid-run, and so that ending it in ``finally`` always releases it."""
    base = connections[DEFAULT_DB_ALIAS]
    wrapper = type(base)(dict(base.settings_dict), DEFAULT_DB_ALIAS)
    try:
        wrapper.set_autocommit(False)  # the first statement opens the transaction that holds the lock
        with wrapper.cursor() as cursor:
            # A hung worker must not block refills forever; a live run touches the session per batch.
            cursor.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, true)",
                           [str(int(settings.REFILL_RUN_LEASE_SECONDS * 1000))])
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [REFILL_LOCK_CLASS, pool_id])
            acquired = cursor.fetchone()[0]
        yield LockSession(wrapper) if acquired else None
    finally:
        try:
            if wrapper.connection is not None and not wrapper.connection.closed:
                wrapper.rollback()  # ends the transaction, and the lock with it, before the close
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
        return cast(bool, cursor.fetchone()[0])
