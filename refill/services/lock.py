"""Single flight: a refill runs only while holding ``pg_try_advisory_xact_lock(REFILL_LOCK_CLASS,
pool_id)`` inside a transaction of its own, on a database session of its own, left open for the run.

A transaction-scoped lock held by a transaction that stays open, not a session lock: behind
PgBouncer in transaction mode a session lock would stay on whichever server session ran the
statement, outlive the run and be "re-acquired" by anyone handed that session next, while an open
transaction pins its server session to us until it ends (docs/operations.md "Scaling out"). The
run commits its batches on Django's connection, never on this one. The lock ends with the
transaction however the run ends: rollback in ``finally``, or the server ending the session when
the socket closes (SIGKILL), or ``idle_in_transaction_session_timeout`` (``REFILL_LOCK_IDLE_SECONDS``,
20 s) when nothing touches the session any more. A heartbeat thread touches it every quarter of that
for as long as the run may last (its time budget): a worker that is frozen (SIGSTOP, a VM paused) or
hung past its budget stops touching it, and the server ends the session, so the next refill can start
(issue 20: a frozen worker used to hold the pool's refills for the run lease, two minutes). The open
transaction has no xid and no snapshot between statements, so it
holds back no VACUUM (checked: ``backend_xmin`` is null)."""
from __future__ import annotations

import threading
import time
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
    """A dedicated database session whose open transaction holds the pool's advisory lock, kept
    alive by a heartbeat thread until ``touch_until`` (a ``time.monotonic()`` instant)."""

    def __init__(self, wrapper: BaseDatabaseWrapper, *, touch_until: float) -> None:
        self._wrapper = wrapper
        self._guard = threading.Lock()  # one statement at a time on the session
        self._touch_until = touch_until
        self._stopped = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name="refill-lock-heartbeat", daemon=True)

    def alive(self) -> bool:
        with self._guard:
            try:
                with self._wrapper.cursor() as cursor:
                    cursor.execute("SELECT 1")
                return True
            except Exception:
                return False

    def start(self) -> None:
        self._wrapper.inc_thread_sharing()  # the heartbeat thread uses this session too, under _guard
        self._heartbeat.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._heartbeat.is_alive():
            self._heartbeat.join()
        if self._wrapper.allow_thread_sharing:
            self._wrapper.dec_thread_sharing()

    def _beat(self) -> None:
        interval = settings.REFILL_LOCK_IDLE_SECONDS / 4
        while not self._stopped.wait(interval) and time.monotonic() < self._touch_until:
            if not self.alive():
                return


@contextmanager
def pool_lock(*, pool_id: int, hold_seconds: float) -> Iterator[LockSession | None]:
    """Yield a live lock session, or ``None`` when another session holds the pool's lock.

    ``hold_seconds``: how long the holder may work (the run's time budget); the heartbeat keeps the
    session alive that long at most. The session is separate from Django's connection so that nothing
    Django does to its own connection (closing it on error, health checks, ``close_old_connections``
    in workers) can silently drop the lock mid-run, and so that ending it in ``finally`` always
    releases it."""
    base = connections[DEFAULT_DB_ALIAS]
    wrapper = type(base)(dict(base.settings_dict), DEFAULT_DB_ALIAS)
    session: LockSession | None = None
    try:
        wrapper.set_autocommit(False)  # the first statement opens the transaction that holds the lock
        with wrapper.cursor() as cursor:
            # Nobody touching the session for this long means the holder is gone or frozen.
            cursor.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, true)",
                           [str(int(settings.REFILL_LOCK_IDLE_SECONDS * 1000))])
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [REFILL_LOCK_CLASS, pool_id])
            acquired = cursor.fetchone()[0]
        if acquired:
            session = LockSession(wrapper, touch_until=time.monotonic() + hold_seconds)
            session.start()
        yield session
    finally:
        if session is not None:
            session.stop()
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
