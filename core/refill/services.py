"""Refilling a pool from TOME: one advisory-locked run, one committed transaction per TOME batch.

The algorithm and the crash-safety argument are in docs/refill.md. In short:

1. readiness gate (onboarding approvals of the pool's environment) — else ``blocked_onboarding``;
2. single flight: ``pg_try_advisory_lock(REFILL_LOCK_CLASS, pool.id)`` on a dedicated session — else
   ``skipped_locked``. A session lock, not a transaction lock, because the run commits once per
   batch; the session is ours alone, so the lock ends with it however the run ends (return,
   exception or SIGKILL: the server drops the session when the socket closes);
3. under the lock, any ``running`` RefillRun of the pool is a leftover of a dead worker (a live
   one would hold the lock): it is marked failed before our own row is written;
4. need = target_size - AVAILABLE, then per batch: TOME ``generate_pairs`` with no transaction open,
   then ``pairs_insert_bulk`` + the run's counters in one ``transaction.atomic()``. The run row
   therefore always equals what is committed, and a crash loses at most the batch in flight
   (whose tokens are unused surrogates in TOME: harmless);
5. a batch failing upstream is retried with backoff a bounded number of times, then the run ends
   ``failed``; an open circuit ends it at once; the time budget ends it ``partial``.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterator

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.dispatch import receiver
from django.utils import timezone

from core.pool.models import PairStatus, Pool, TokenPair
from core.refill.models import RefillLease, RefillOutcome, RefillRun, RefillTrigger
from tokenpool_tome.correlation import CORRELATION_ID_PATTERN, correlation_scope, get_correlation_id
from tokenpool_tome.errors import CircuitOpenError, TomeError, TomeRequestError, TomeResponseError, TomeUnavailable

__all__ = [
    "REFILL_LOCK_CLASS",
    "refill_run",
    "refill_request",
    "lease_try_acquire",
]

logger = logging.getLogger("tokenpool.refill")

# First key of the two-key advisory lock (ASCII "refl"); the second key is the pool id. Anything
# else in the project that takes advisory locks uses a different first key.
REFILL_LOCK_CLASS = 0x7265666C

# Task paths as django-q2 stores them (strings, so enqueuing never imports the task module).
TASK_ON_DEMAND = "core.refill.tasks.refill_on_demand"
TASK_MANUAL = "core.refill.tasks.refill_manual"


def _setting(name: str, default: float) -> float:
    return getattr(settings, name, default)


# ---- the run -----------------------------------------------------------------------------------


class _Stop(Exception):
    """Ends the batch loop with an outcome (not an error of the program)."""

    def __init__(self, outcome: str, error: str) -> None:
        super().__init__(error)
        self.outcome = outcome
        self.error = error


def refill_run(*, pool: Pool, trigger: str, count: int | None = None,
               time_budget_seconds: float | None = None, lease_token: uuid.UUID | str | None = None,
               correlation_id: str | None = None) -> RefillRun:
    """Top ``pool`` up to its ``target_size`` (or add exactly ``count`` pairs) and record the run.

    Never raises for an expected outcome (blocked, locked, TOME down, out of time): the returned
    ``RefillRun`` says what happened. Unexpected errors (a database failure) mark the run failed and
    propagate. Call it outside any transaction: it commits once per batch (inside an outer
    transaction, as in tests, the batches become savepoints and are durable only with it)."""
    if trigger not in RefillTrigger.values:
        raise ValueError(f"unknown refill trigger {trigger!r}")
    if count is not None and count < 0:
        raise ValueError("count must not be negative")
    budget = float(time_budget_seconds if time_budget_seconds is not None
                   else _setting("REFILL_TIME_BUDGET_SECONDS", 300.0))
    token = uuid.UUID(str(lease_token)) if lease_token else uuid.uuid4()
    pool = Pool.objects.get(pk=pool.pk)  # the admin may have changed the tunables since it was loaded

    with correlation_scope(_run_correlation_id(correlation_id)) as cid:
        from core.onboarding.readiness import missing_approvals

        missing = missing_approvals(environment=pool.environment)
        if missing:
            if lease_token:
                # Keep on-demand triggers quiet for a while instead of recording a blocked run per second.
                _lease_finish(pool_id=pool.pk, token=token,
                              cooldown_seconds=_setting("REFILL_COOLDOWN_SECONDS", 60.0))
            run = _run_record_finished(
                pool=pool, trigger=trigger, outcome=RefillOutcome.BLOCKED_ONBOARDING, correlation_id=cid,
                error=f"Onboarding approvals missing for {pool.environment}: " + "; ".join(missing),
            )
            logger.warning("refill_blocked_onboarding", extra={"pool": pool.name, "missing": missing})
            return run

        with _pool_lock(pool_id=pool.pk) as lock:
            if lock is None:
                run = _run_record_finished(
                    pool=pool, trigger=trigger, outcome=RefillOutcome.SKIPPED_LOCKED, correlation_id=cid,
                    error="Another refill of this pool holds its lock.",
                )
                logger.info("refill_skipped_locked", extra={"pool": pool.name})
                return run
            return _run_locked(pool=pool, trigger=trigger, count=count, budget=budget, token=token,
                               correlation_id=cid, lock=lock)


def _run_locked(*, pool: Pool, trigger: str, count: int | None, budget: float, token: uuid.UUID,
                correlation_id: str, lock: "_LockSession") -> RefillRun:
    started = time.monotonic()
    deadline = started + budget
    _lease_take_running(pool_id=pool.pk, token=token)
    abandoned = _runs_abandon_stale(pool=pool)
    available = TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).count()
    requested = count if count is not None else max(0, pool.target_size - available)
    run = RefillRun.objects.create(pool=pool, trigger=trigger, requested=requested,
                                   correlation_id=correlation_id)
    logger.info("refill_started", extra={"pool": pool.name, "trigger": trigger, "run_id": run.pk,
                                         "available": available, "requested": requested,
                                         "abandoned_runs": abandoned})
    cooldown = 0.0
    with _tome_call_counter(correlation_id) as calls:
        try:
            if requested == 0:
                raise _Stop(RefillOutcome.NOTHING_TO_DO, "")
            _fill(run=run, pool=pool, deadline=deadline, budget=budget, lock=lock, token=token, calls=calls)
            outcome, error = RefillOutcome.SUCCEEDED, ""
        except _Stop as stop:
            outcome, error = stop.outcome, stop.error
            if outcome == RefillOutcome.FAILED:
                cooldown = _setting("REFILL_COOLDOWN_SECONDS", 60.0)
        except BaseException as exc:  # record what we can, then let the caller see the real error
            _run_finish_quietly(run=run, calls=calls, error=f"{type(exc).__name__}: {exc}"[:2000])
            _lease_finish_quietly(pool_id=pool.pk, token=token, cooldown_seconds=_setting("REFILL_COOLDOWN_SECONDS", 60.0))
            raise
        run.tome_calls = calls.value
    run.outcome = outcome
    run.error = error
    run.finished_at = timezone.now()
    run.save(update_fields=["outcome", "error", "finished_at", "tome_calls", "tome_seconds", "db_seconds"])
    _lease_finish(pool_id=pool.pk, token=token, cooldown_seconds=cooldown)
    log = logger.warning if outcome in (RefillOutcome.FAILED, RefillOutcome.PARTIAL) else logger.info
    log("refill_finished", extra={
        "pool": pool.name, "run_id": run.pk, "outcome": outcome, "requested": run.requested,
        "inserted": run.inserted, "tome_calls": run.tome_calls, "tome_seconds": round(run.tome_seconds, 3),
        "db_seconds": round(run.db_seconds, 3), "seconds": round(time.monotonic() - started, 3),
        "error": error or None,
    })
    return run


def _fill(*, run: RefillRun, pool: Pool, deadline: float, budget: float, lock: "_LockSession",
          token: uuid.UUID, calls: "_Counter") -> None:
    from core.pool.services import pairs_insert_bulk
    from core.tome.provider import tome_client_for_pool

    client = tome_client_for_pool(pool)
    attempts_max = int(_setting("REFILL_BATCH_ATTEMPTS", 3))
    backoff_initial = _setting("REFILL_BACKOFF_INITIAL_SECONDS", 0.5)
    backoff_max = _setting("REFILL_BACKOFF_MAX_SECONDS", 8.0)
    lease_seconds = _setting("REFILL_RUN_LEASE_SECONDS", 120.0)
    batch_no = 0
    while run.inserted < run.requested:
        batch_no += 1
        if time.monotonic() >= deadline:
            raise _Stop(RefillOutcome.PARTIAL,
                        f"Time budget of {budget:g}s used up after {run.inserted} of {run.requested} pairs.")
        if not lock.alive():
            raise _Stop(RefillOutcome.FAILED, "Lost the refill lock's database session; stopped to stay single-flight.")
        n = min(pool.batch_size, run.requested - run.inserted)

        # TOME first, with no transaction open (a transaction held across the network holds back
        # VACUUM for every reservation).
        pairs = None
        for attempt in range(1, attempts_max + 1):
            t0 = time.perf_counter()
            try:
                pairs = client.generate_pairs(n, batch_size=n)
            except CircuitOpenError as exc:
                run.tome_seconds += time.perf_counter() - t0
                raise _Stop(RefillOutcome.FAILED,
                            f"Batch {batch_no}: TOME circuit breaker is open ({exc}); "
                            f"{run.inserted} of {run.requested} pairs inserted.") from None
            except (TomeUnavailable, TomeResponseError) as exc:
                run.tome_seconds += time.perf_counter() - t0
                delay = min(backoff_max, backoff_initial * 2 ** (attempt - 1))
                retry_after = getattr(exc, "retry_after", None)
                if retry_after:
                    delay = min(backoff_max, max(delay, retry_after))
                if attempt == attempts_max or time.monotonic() + delay >= deadline:
                    raise _Stop(RefillOutcome.FAILED,
                                f"Batch {batch_no} failed upstream after {attempt} attempt(s): {exc}; "
                                f"{run.inserted} of {run.requested} pairs inserted.") from None
                logger.warning("refill_batch_retry", extra={"pool": pool.name, "run_id": run.pk,
                                                            "batch": batch_no, "attempt": attempt,
                                                            "delay_seconds": round(delay, 2),
                                                            "error": str(exc)})
                time.sleep(delay)
                continue
            except (TomeRequestError, TomeError) as exc:  # TOME refused: repeating cannot help
                run.tome_seconds += time.perf_counter() - t0
                raise _Stop(RefillOutcome.FAILED,
                            f"Batch {batch_no} rejected by TOME: {exc}; "
                            f"{run.inserted} of {run.requested} pairs inserted.") from None
            run.tome_seconds += time.perf_counter() - t0
            break
        assert pairs is not None

        # One transaction per batch: the pairs and the run's counters commit together, so the run
        # row always matches what is in the table, and a crash loses at most this batch.
        db_before = run.db_seconds
        t0 = time.perf_counter()
        with transaction.atomic():
            added = pairs_insert_bulk(pool=pool, pairs=pairs)
            run.inserted += added
            run.tome_calls = calls.value
            RefillRun.objects.filter(pk=run.pk).update(
                inserted=run.inserted, tome_calls=run.tome_calls, tome_seconds=run.tome_seconds,
                db_seconds=db_before + (time.perf_counter() - t0),  # the commit is added by the next write
            )
            RefillLease.objects.filter(pool_id=pool.pk, token=token).update(
                expires_at=timezone.now() + timedelta(seconds=lease_seconds))
        run.db_seconds = db_before + (time.perf_counter() - t0)
        if added < len(pairs):
            # ON CONFLICT DO NOTHING skipped some: TOME returned tokens we already hold. Never
            # expected (TOME tokens are unique forever); stop rather than loop on a broken upstream.
            raise _Stop(RefillOutcome.FAILED,
                        f"Batch {batch_no}: {len(pairs) - added} of {len(pairs)} pairs from TOME were "
                        f"already stored; {run.inserted} of {run.requested} pairs inserted.")




def _run_correlation_id(parent: str | None) -> str:
    """A fresh id per run (TOME calls are attributed to the run by it), prefixed by the caller's id
    when there is one so a request's or a task's logs lead to the run it caused."""
    own = uuid.uuid4().hex[:12]
    parent = parent or get_correlation_id()
    if parent and CORRELATION_ID_PATTERN.fullmatch(parent):
        return f"{parent[:100]}.refill-{own}"
    return f"refill-{own}"


def _run_record_finished(*, pool: Pool, trigger: str, outcome: str, correlation_id: str,
                         error: str) -> RefillRun:
    return RefillRun.objects.create(pool=pool, trigger=trigger, outcome=outcome, error=error,
                                    finished_at=timezone.now(), correlation_id=correlation_id)


def _runs_abandon_stale(*, pool: Pool) -> int:
    """Close ``running`` rows of ``pool`` left by a worker that died mid-run.

    Called only while holding the pool's lock: a live run holds that lock for its whole life, so
    any other ``running`` row of this pool cannot belong to a live run."""
    return RefillRun.objects.filter(pool=pool, outcome=RefillOutcome.RUNNING).update(
        outcome=RefillOutcome.FAILED, finished_at=timezone.now(),
        error="Abandoned: the worker stopped mid-run (crash or kill); its committed batches are kept. "
              "Closed by the next run of this pool.",
    )


def _run_finish_quietly(*, run: RefillRun, calls: "_Counter", error: str) -> None:
    """Best effort after an unexpected error; if even this fails the next run closes the row."""
    try:
        RefillRun.objects.filter(pk=run.pk, outcome=RefillOutcome.RUNNING).update(
            outcome=RefillOutcome.FAILED, finished_at=timezone.now(), error=error,
            tome_calls=calls.value, tome_seconds=run.tome_seconds, db_seconds=run.db_seconds,
        )
        run.refresh_from_db()
    except Exception:
        logger.exception("refill_run_record_failed", extra={"run_id": run.pk})


# ---- single flight: the pool's advisory lock on a session of its own ----------------------------


class _LockSession:
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
def _pool_lock(*, pool_id: int) -> Iterator[_LockSession | None]:
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
        yield _LockSession(wrapper) if acquired else None
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


# ---- TOME calls made by this run ----------------------------------------------------------------


class _Counter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


_counters: dict[str, _Counter] = {}
_counters_lock = threading.Lock()


@contextmanager
def _tome_call_counter(correlation_id: str) -> Iterator[_Counter]:
    """Count the HTTP calls (retries included) the process-wide client makes for this run.

    The client is shared by every thread of the process, so its totals cannot be diffed; each call
    carries the run's own correlation id, which can."""
    counter = _Counter()
    with _counters_lock:
        _counters[correlation_id] = counter
    try:
        yield counter
    finally:
        with _counters_lock:
            _counters.pop(correlation_id, None)


def _connect_tome_signal() -> None:
    try:
        from core.tome.provider import tome_call
    except ImportError:  # pragma: no cover - the TOME glue is part of the project
        return

    @receiver(tome_call, weak=False, dispatch_uid="refill_count_tome_calls")
    def _count(*, record, **kwargs) -> None:
        counter = _counters.get(record.correlation_id)
        if counter is not None:
            counter.value += 1


_connect_tome_signal()


# ---- the "queued or running" lease (de-duplication of on-demand refills) -------------------------


def lease_try_acquire(*, pool_id: int, seconds: float) -> uuid.UUID | None:
    """Take the pool's refill lease if nobody holds a live one; return its token, else ``None``.

    One statement, so two processes racing for it cannot both win: the loser's INSERT waits for
    the winner's row and its ``WHERE`` then sees a live lease."""
    token = uuid.uuid4()
    return token if _lease_upsert(pool_id=pool_id, token=token, state="queued", seconds=seconds,
                                  only_if_expired=True) else None


def _lease_take_running(*, pool_id: int, token: uuid.UUID) -> None:
    """The run holds the pool's lock now: the lease says "running" under this run's token, so no
    trigger enqueues another refill while it works (whoever queued the lease before)."""
    _lease_upsert(pool_id=pool_id, token=token, state="running",
                  seconds=_setting("REFILL_RUN_LEASE_SECONDS", 120.0), only_if_expired=False)


def _lease_upsert(*, pool_id: int, token: uuid.UUID, state: str, seconds: float, only_if_expired: bool) -> bool:
    """Write the pool's lease row; with ``only_if_expired`` an existing live lease is left alone.
    Returns whether the row is now ours."""
    # A fresh "queued" lease forgets the old task id; a run taking over keeps the id of its task.
    guard, task_reset = ("WHERE l.expires_at < now()", ", task_id = ''") if only_if_expired else ("", "")
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {RefillLease._meta.db_table} AS l
                (pool_id, token, state, acquired_at, expires_at, task_id)
            VALUES (%s, %s, %s, now(), now() + make_interval(secs => %s), '')
            ON CONFLICT (pool_id) DO UPDATE
                SET token = EXCLUDED.token, state = EXCLUDED.state, acquired_at = EXCLUDED.acquired_at,
                    expires_at = EXCLUDED.expires_at{task_reset}
                {guard}
            RETURNING token
            """,
            [pool_id, token, state, float(seconds)],
        )
        return cursor.fetchone() is not None


def _lease_finish(*, pool_id: int, token: uuid.UUID, cooldown_seconds: float) -> None:
    """Drop our lease (the next low-watermark reservation may enqueue again at once), or turn it
    into a cool-down after a failure so a TOME outage is not hammered by one refill per second."""
    mine = RefillLease.objects.filter(pool_id=pool_id, token=token)
    if cooldown_seconds > 0:
        now = timezone.now()
        mine.update(state="cooldown", acquired_at=now, expires_at=now + timedelta(seconds=cooldown_seconds))
    else:
        mine.delete()


def _lease_finish_quietly(**kwargs) -> None:
    try:
        _lease_finish(**kwargs)
    except Exception:
        logger.exception("refill_lease_release_failed")


def refill_request(*, pool: Pool, trigger: str = RefillTrigger.LOW_WATERMARK) -> str | None:
    """Enqueue an on-demand refill of ``pool`` unless one is already queued or running.

    Returns the django-q task id, or ``None`` when de-duplicated. The lease and the queue message
    are written in one transaction, so with the ORM broker either both exist or neither does;
    with Redis a lost message only costs the lease's expiry time."""
    from django_q.tasks import async_task

    seconds = _setting("REFILL_QUEUE_LEASE_SECONDS", 300.0)
    with transaction.atomic():
        token = lease_try_acquire(pool_id=pool.pk, seconds=seconds)
        if token is None:
            return None
        task_id = async_task(TASK_ON_DEMAND, pool.pk, str(token), trigger=trigger,
                             correlation_id=get_correlation_id(), task_name=f"refill:{pool.name}:{trigger}",
                             group=f"refill:{pool.name}")
        RefillLease.objects.filter(pool_id=pool.pk, token=token).update(task_id=str(task_id or ""))
    logger.info("refill_enqueued", extra={"pool": pool.name, "trigger": trigger, "task_id": task_id})
    return task_id


def refill_enqueue_manual(*, pool: Pool) -> str:
    """Queue a manual refill (admin "Refill now"). Not de-duplicated: the advisory lock keeps two
    of them from running at once, and the operator asked for it explicitly."""
    from django_q.tasks import async_task

    task_id = async_task(TASK_MANUAL, pool.pk, correlation_id=get_correlation_id(),
                         task_name=f"refill:{pool.name}:manual", group=f"refill:{pool.name}")
    logger.info("refill_enqueued", extra={"pool": pool.name, "trigger": "manual", "task_id": task_id})
    return task_id
