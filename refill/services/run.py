"""The refill run: top a pool up to its target, one committed transaction per TOME batch.

The algorithm and the crash-safety argument are in docs/refill.md. In short:

1. readiness gate (onboarding approvals of the pool's environment) — else ``blocked_onboarding``;
2. single flight: ``pg_try_advisory_xact_lock(REFILL_LOCK_CLASS, pool.id)`` held by a transaction
   left open on a dedicated session (``lock.py``: why not a session lock, PgBouncer) — else
   ``skipped_locked``; the lock ends with that transaction however the run ends (return,
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
import time
import uuid
from datetime import timedelta
from typing import cast

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from tenacity import RetryCallState, Retrying, retry_if_exception_type, retry_if_not_exception_type

from onboarding.readiness import missing_approvals
from pool import services as pool_services  # attribute access at call time: tests replace the insert
from pool.models import PairStatus, Pool, TokenPair
from refill.models import RefillLease, RefillOutcome, RefillRun, RefillTrigger
from refill.services.calls import Counter, tome_call_counter
from refill.services.lease import lease_finish, lease_finish_quietly, lease_take_running
from refill.services.lock import LockSession, pool_lock
from tokenpool_tome.client import HttpTokenizationLibrary
from tokenpool_tome.client import TokenPair as TomePair
from tokenpool_tome.correlation import CORRELATION_ID_PATTERN, correlation_scope, get_correlation_id
from tokenpool_tome.errors import CircuitOpenError, TomeError, TomeResponseError, TomeUnavailable
from tome.provider import tome_client_for_pool

logger = logging.getLogger("tokenpool.refill")


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
                   else settings.REFILL_TIME_BUDGET_SECONDS)
    token = uuid.UUID(str(lease_token)) if lease_token else uuid.uuid4()
    pool = Pool.objects.get(pk=pool.pk)  # the admin may have changed the tunables since it was loaded

    with correlation_scope(_run_correlation_id(correlation_id)) as cid:
        missing = missing_approvals(environment=pool.environment)
        if missing:
            if lease_token:
                # Keep on-demand triggers quiet for a while instead of recording a blocked run per second.
                lease_finish(pool_id=pool.pk, token=token,
                              cooldown_seconds=settings.REFILL_COOLDOWN_SECONDS)
            run = _run_record_finished(
                pool=pool, trigger=trigger, outcome=RefillOutcome.BLOCKED_ONBOARDING, correlation_id=cid,
                error=f"Onboarding approvals missing for {pool.environment}: " + "; ".join(missing),
            )
            logger.warning("refill_blocked_onboarding", extra={"pool": pool.name, "missing": missing})
            return run

        # The heartbeat keeps the lock for the run's budget and a margin for its last batch's write.
        with pool_lock(pool_id=pool.pk, hold_seconds=budget + settings.REFILL_LOCK_IDLE_SECONDS) as lock:
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
                correlation_id: str, lock: LockSession) -> RefillRun:
    started = time.monotonic()
    deadline = started + budget
    lease_take_running(pool_id=pool.pk, token=token)
    abandoned = _runs_abandon_stale(pool=pool)
    available = TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).count()
    requested = count if count is not None else max(0, pool.target_size - available)
    run: RefillRun = RefillRun.objects.create(pool=pool, trigger=trigger, requested=requested,
                                              correlation_id=correlation_id)
    logger.info("refill_started", extra={"pool": pool.name, "trigger": trigger, "run_id": run.pk,
                                         "available": available, "requested": requested,
                                         "abandoned_runs": abandoned})
    cooldown = 0.0
    outcome: str
    with tome_call_counter(correlation_id) as calls:
        try:
            if requested == 0:
                raise _Stop(RefillOutcome.NOTHING_TO_DO, "")
            _fill(run=run, pool=pool, deadline=deadline, budget=budget, lock=lock, token=token, calls=calls)
            outcome, error = RefillOutcome.SUCCEEDED, ""
        except _Stop as stop:
            outcome, error = stop.outcome, stop.error
            if outcome == RefillOutcome.FAILED:
                cooldown = settings.REFILL_COOLDOWN_SECONDS
        except BaseException as exc:  # record what we can, then let the caller see the real error
            _run_finish_quietly(run=run, calls=calls, error=f"{type(exc).__name__}: {exc}"[:2000])
            lease_finish_quietly(pool_id=pool.pk, token=token, cooldown_seconds=settings.REFILL_COOLDOWN_SECONDS)
            raise
        run.tome_calls = calls.value
    run.outcome = outcome
    run.error = error
    run.finished_at = timezone.now()
    run.save(update_fields=["outcome", "error", "finished_at", "tome_calls", "tome_seconds", "db_seconds"])
    lease_finish(pool_id=pool.pk, token=token, cooldown_seconds=cooldown)
    log = logger.warning if outcome in (RefillOutcome.FAILED, RefillOutcome.PARTIAL) else logger.info
    log("refill_finished", extra={
        "pool": pool.name, "run_id": run.pk, "outcome": outcome, "requested": run.requested,
        "inserted": run.inserted, "tome_calls": run.tome_calls, "tome_seconds": round(run.tome_seconds, 3),
        "db_seconds": round(run.db_seconds, 3), "seconds": round(time.monotonic() - started, 3),
        "error": error or None,
    })
    return run


def _fill(*, run: RefillRun, pool: Pool, deadline: float, budget: float, lock: LockSession,
          token: uuid.UUID, calls: Counter) -> None:
    client = tome_client_for_pool(pool)
    lease_seconds = settings.REFILL_RUN_LEASE_SECONDS
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
        pairs = _generate_batch(client=client, n=n, run=run, pool=pool, batch_no=batch_no, deadline=deadline)
        if not lock.alive():  # frozen past REFILL_LOCK_IDLE_SECONDS meanwhile: another run may own the pool
            raise _Stop(RefillOutcome.FAILED, "Lost the refill lock's database session; stopped to stay single-flight.")

        # One transaction per batch: the pairs and the run's counters commit together, so the run
        # row always matches what is in the table, and a crash loses at most this batch.
        db_before = run.db_seconds
        t0 = time.perf_counter()
        with transaction.atomic():
            added = pool_services.pairs_insert_bulk(pool=pool, pairs=pairs)
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


def _generate_batch(*, client: HttpTokenizationLibrary, n: int, run: RefillRun, pool: Pool, batch_no: int,
                    deadline: float) -> list[TomePair]:
    """One batch from TOME. Unavailable or a bad answer: retried with exponential backoff (at least
    TOME's Retry-After, at most ``REFILL_BACKOFF_MAX_SECONDS``) up to ``REFILL_BATCH_ATTEMPTS``
    times and never past the run's deadline. An open breaker or a refusal ends the run at once."""
    initial, ceiling = settings.REFILL_BACKOFF_INITIAL_SECONDS, settings.REFILL_BACKOFF_MAX_SECONDS

    def backoff(state: RetryCallState) -> float:
        delay = min(ceiling, initial * 2 ** (state.attempt_number - 1))
        retry_after = getattr(_attempt_error(state), "retry_after", None)
        return cast(float, min(ceiling, max(delay, retry_after)) if retry_after else delay)

    def give_up(state: RetryCallState) -> bool:  # tenacity computes the wait before asking
        return (state.attempt_number >= settings.REFILL_BATCH_ATTEMPTS
                or time.monotonic() + state.upcoming_sleep >= deadline)

    def log_retry(state: RetryCallState) -> None:
        logger.warning("refill_batch_retry", extra={"pool": pool.name, "run_id": run.pk, "batch": batch_no,
                                                    "attempt": state.attempt_number,
                                                    "delay_seconds": round(state.upcoming_sleep, 2),
                                                    "error": str(_attempt_error(state))})

    retrying = Retrying(
        retry=retry_if_exception_type((TomeUnavailable, TomeResponseError))
        & retry_if_not_exception_type(CircuitOpenError),
        wait=backoff, stop=give_up, before_sleep=log_retry, reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                t0 = time.perf_counter()
                try:
                    return client.generate_pairs(n, batch_size=n)
                finally:
                    run.tome_seconds += time.perf_counter() - t0
    except CircuitOpenError as exc:
        raise _Stop(RefillOutcome.FAILED,
                    f"Batch {batch_no}: TOME circuit breaker is open ({exc}); "
                    f"{run.inserted} of {run.requested} pairs inserted.") from None
    except (TomeUnavailable, TomeResponseError) as exc:
        raise _Stop(RefillOutcome.FAILED,
                    f"Batch {batch_no} failed upstream after {retrying.statistics['attempt_number']} attempt(s): "
                    f"{exc}; {run.inserted} of {run.requested} pairs inserted.") from None
    except TomeError as exc:  # TOME refused: repeating cannot help
        raise _Stop(RefillOutcome.FAILED,
                    f"Batch {batch_no} rejected by TOME: {exc}; "
                    f"{run.inserted} of {run.requested} pairs inserted.") from None
    raise AssertionError("unreachable: tenacity returns or re-raises")


def _run_correlation_id(parent: str | None) -> str:
    """A fresh id per run (TOME calls are attributed to the run by it), prefixed by the caller's id
    when there is one so a request's or a task's logs lead to the run it caused."""
    own = uuid.uuid4().hex[:12]
    parent = parent or get_correlation_id()
    if parent and CORRELATION_ID_PATTERN.fullmatch(parent):
        return f"{parent[:100]}.refill-{own}"
    return f"refill-{own}"


def _attempt_error(state: RetryCallState) -> BaseException | None:
    """The error of the attempt tenacity just made (its outcome is set before wait and before_sleep)."""
    return state.outcome.exception() if state.outcome is not None else None


def _run_record_finished(*, pool: Pool, trigger: str, outcome: str, correlation_id: str,
                         error: str) -> RefillRun:
    return cast(RefillRun, RefillRun.objects.create(pool=pool, trigger=trigger, outcome=outcome, error=error,
                                                    finished_at=timezone.now(), correlation_id=correlation_id))


def _runs_abandon_stale(*, pool: Pool) -> int:
    """Close ``running`` rows of ``pool`` left by a worker that died mid-run.

    Called only while holding the pool's lock: a live run holds that lock for its whole life, so
    any other ``running`` row of this pool cannot belong to a live run."""
    abandoned = RefillRun.objects.filter(pool=pool, outcome=RefillOutcome.RUNNING).update(
        outcome=RefillOutcome.FAILED, finished_at=timezone.now(),
        error="Abandoned: the worker stopped mid-run (crash or kill); its committed batches are kept. "
              "Closed by the next run of this pool.",
    )
    return cast(int, abandoned)


def _run_finish_quietly(*, run: RefillRun, calls: Counter, error: str) -> None:
    """Best effort after an unexpected error; if even this fails the next run closes the row."""
    try:
        RefillRun.objects.filter(pk=run.pk, outcome=RefillOutcome.RUNNING).update(
            outcome=RefillOutcome.FAILED, finished_at=timezone.now(), error=error,
            tome_calls=calls.value, tome_seconds=run.tome_seconds, db_seconds=run.db_seconds,
        )
        run.refresh_from_db()
    except Exception:
        logger.exception("refill_run_record_failed", extra={"run_id": run.pk})
