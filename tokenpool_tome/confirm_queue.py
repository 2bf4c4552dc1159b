"""Confirmations off the caller's path: ``TokenPoolClient.confirm(reservation_id, wait=False)``
(contract section 5, issue 22).

A queue flushed by a background thread through ``POST /reservations/confirm/batch`` at least once
a second (sooner when 500 are waiting; up to 4 batches in flight at once) and on ``close()``.
While TokenPool is unreachable (or throttling) the confirmations stay queued and the next flush
tries again; a per-item refusal (``not_found``, ``reservation_not_active``: the lease ran out
first) is logged with the reservation id and counted as ``confirms_failed``. What is still queued
when ``close()`` cannot reach TokenPool, or when the process dies, is lost: those pairs expire and
are RETIRED (docs/client-library.md says how an operator reconciles them).

An internal module of the package.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from tokenpool_tome.correlation import correlation_scope, new_correlation_id
from tokenpool_tome.errors import Throttled, TokenPoolError, TokenPoolUnavailable

__all__ = ["FLUSH_INTERVAL_SECONDS", "MAX_CONFIRM_BATCH", "ConfirmQueue"]

logger = logging.getLogger("tokenpool.client")

FLUSH_INTERVAL_SECONDS = 1.0
MAX_CONFIRM_BATCH = 500  # the server's limit on confirm/batch
# Backpressure: a caller queueing beyond this waits for a flush, so the queue (what a crash loses)
# stays bounded and a caller cannot outrun what TokenPool confirms. Not while TokenPool is
# unreachable (the last flush was deferred): then the queue grows rather than stall card creation.
MAX_QUEUED = 4 * MAX_CONFIRM_BATCH
_PARALLEL_BATCHES = 4  # confirm batches in flight at once when the queue is long
_LOGGED_IDS = 50

SendBatch = Callable[[list[str]], list[Any]]  # the ``results`` of confirm/batch, in request order
SendOne = Callable[[str, str], object]  # (reservation_id, owner_ref): a single confirm


class ConfirmQueue:
    """Thread-safe; one per client. A confirmation with an ``owner_ref`` goes as a single confirm
    (the batch form carries ids only), still from the flushing thread."""

    def __init__(self, *, send_batch: SendBatch, send_one: SendOne, close_timeout: float,
                 interval: float = FLUSH_INTERVAL_SECONDS) -> None:
        self._send_batch, self._send_one = send_batch, send_one
        self._close_timeout, self._interval = close_timeout, interval
        self._closed = False
        self._reset_state()

    def _reset_state(self) -> None:
        self._cond = threading.Condition()
        self._flush_lock = threading.Lock()
        self._queue: deque[tuple[str, str | None]] = deque()
        self._worker: threading.Thread | None = None
        self._deferred = False  # the last flush could not reach TokenPool
        self.counters = {"confirms_sent": 0, "confirms_failed": 0, "confirms_lost": 0}

    def put(self, reservation_id: str, owner_ref: str | None) -> bool:
        """Queue one confirmation; False once the queue is closed (the caller confirms itself)."""
        with self._cond:
            while (len(self._queue) >= MAX_QUEUED and not self._closed and not self._deferred
                   and self._worker_alive()):
                # No notify here: with this many queued the flushing thread does not wait, and a
                # notify would wake the other held-back callers, who would notify in turn (a livelock).
                self._cond.wait(timeout=self._interval)
            if self._closed:
                return False
            self._queue.append((reservation_id, owner_ref))
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="tokenpool-confirm-flush", daemon=True)
                self._worker.start()
            if len(self._queue) >= MAX_CONFIRM_BATCH:
                self._cond.notify_all()
            return True

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def flush(self) -> int:
        """Send everything queued, 500 at a time and up to ``_PARALLEL_BATCHES`` batches at once;
        returns how many are left (TokenPool unreachable)."""
        with self._flush_lock:
            while True:
                with self._cond:
                    batches: list[list[tuple[str, str | None]]] = []
                    while self._queue and len(batches) < _PARALLEL_BATCHES:
                        batches.append([self._queue.popleft()
                                        for _ in range(min(MAX_CONFIRM_BATCH, len(self._queue)))])
                    self._cond.notify_all()  # callers held back by MAX_QUEUED
                if not batches:
                    return 0
                unsent = self._send_all(batches)
                with self._cond:
                    self._deferred = bool(unsent)
                    if unsent:
                        self._queue.extendleft(reversed([item for batch in unsent for item in batch]))
                        self._cond.notify_all()
                        return len(self._queue)

    def _send_all(self, batches: list[list[tuple[str, str | None]]]) -> list[list[tuple[str, str | None]]]:
        """Send the batches (the first on this thread, the others each on its own); the unsent ones."""
        outcome = [False] * len(batches)

        def send(index: int) -> None:
            outcome[index] = self._send(batches[index])

        helpers = [threading.Thread(target=send, args=(i,), name="tokenpool-confirm-send", daemon=True)
                   for i in range(1, len(batches))]
        for helper in helpers:
            helper.start()
        send(0)
        for helper in helpers:
            helper.join()
        return [batch for batch, sent in zip(batches, outcome, strict=True) if not sent]

    def close(self) -> None:
        """Stop the flushing thread and send what is queued; what cannot be sent is logged as lost."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=self._close_timeout)
        self.flush()
        with self._cond:
            lost = [rid for rid, _ in self._queue]
            self._queue.clear()
            self.counters["confirms_lost"] += len(lost)
        if lost:
            logger.error("tokenpool_confirms_lost",
                         extra={"count": len(lost), "reservation_ids": lost[:_LOGGED_IDS]})

    def _worker_alive(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def after_fork_in_child(self) -> None:
        """In a forked child: the parent's queued confirmations are the parent's to send."""
        self._reset_state()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._closed and len(self._queue) < MAX_CONFIRM_BATCH:
                    self._cond.wait(timeout=self._interval)
                if self._closed:
                    return
            self.flush()

    def _send(self, batch: list[tuple[str, str | None]]) -> bool:
        """One flush round; False when TokenPool could not take it (the batch is queued again)."""
        with correlation_scope(new_correlation_id()) as correlation_id:
            try:
                results = self._send_batch([rid for rid, owner in batch if owner is None]) if any(
                    owner is None for _, owner in batch) else []
                refused = [(str(r.get("reservation_id")), str(r.get("code"))) for r in results
                           if isinstance(r, dict) and "code" in r]
                for rid, owner_ref in batch:
                    if owner_ref is not None:
                        refused.extend(self._confirm_one(rid, owner_ref))
            except (TokenPoolUnavailable, Throttled) as exc:
                logger.warning("tokenpool_confirm_flush_deferred",
                               extra={"count": len(batch), "reason": exc.code, "correlation_id": correlation_id})
                return False
            except TokenPoolError as exc:
                self._count(failed=len(batch))
                logger.error("tokenpool_confirm_flush_refused",
                             extra={"count": len(batch), "reason": exc.code, "correlation_id": correlation_id,
                                    "reservation_ids": [rid for rid, _ in batch][:_LOGGED_IDS]})
                return True
        self._count(sent=len(batch) - len(refused), failed=len(refused))
        for rid, code in refused:
            logger.warning("tokenpool_confirm_refused",
                           extra={"reservation_id": rid, "reason": code, "correlation_id": correlation_id})
        return True

    def _confirm_one(self, reservation_id: str, owner_ref: str) -> list[tuple[str, str]]:
        try:
            self._send_one(reservation_id, owner_ref)
        except (TokenPoolUnavailable, Throttled):
            raise
        except TokenPoolError as exc:
            return [(reservation_id, exc.code)]
        return []

    def _count(self, *, sent: int = 0, failed: int = 0) -> None:
        with self._cond:
            self.counters["confirms_sent"] += sent
            self.counters["confirms_failed"] += failed
