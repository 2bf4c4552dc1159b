"""The leased local buffer of ``TokenPoolClient(buffer=True)`` (contract section 5, issue 22).

Meituan Leaf's segment mode applied to leased, finite, never-reissued pairs: a segment is one
``reservations/batch`` answer (one lease); ``take()`` hands out its next pair without a network
call; a background thread fetches the next segment when what is held falls to the low mark (one
batch, or what the last 5 s of demand would take in two refill round trips), so callers keep taking
from the rest while the fetch runs (double buffer). When demand outruns one batch per round trip,
up to 4 fetches run at once: the client holds at most 4 × 500 pairs beside its current segment.

- Size follows demand: a batch is about ``buffer_seconds`` of the demand measured over the last
  ``DEMAND_WINDOW_SECONDS`` (1..500 pairs), so a quiet process holds one or two pairs.
- Never a stale pair: a segment is usable until ``sent + lease - margin`` on this process's
  monotonic clock (``sent`` is when its request left, so the server's clock never matters); past
  that its pairs are released in the background and counted as ``waste``.
- Outages: a failed fetch is remembered; callers are served from what is held, and only an empty
  buffer raises the failure (the client then falls back to TOME). Fetches pause ``retry_after``
  (at least a second) after a failure. A caller finding the buffer empty waits for a pending fetch
  at most ``wait_limit`` seconds (the client's request timeout): a TokenPool that accepts
  connections but does not answer (stopped, hung) would otherwise hold every caller for the
  fetch's whole retry cycle; once one caller gave up, the next ones fall back at once until a
  fetch completes.
- ``close()`` releases what is held in as few calls as possible; ``after_fork_in_child()`` forgets
  the parent's pairs (they are the parent's to hand out or release) and its threads.

An internal module of the package: the client API is ``TokenPoolClient``'s.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from tokenpool_tome.correlation import correlation_scope, get_correlation_id, new_correlation_id
from tokenpool_tome.demand import DEMAND_WINDOW_SECONDS, MAX_BATCH, DemandMeter, batch_size
from tokenpool_tome.errors import TokenPoolUnavailable
from tokenpool_tome.reservation import Reservation

__all__ = ["DEMAND_WINDOW_SECONDS", "MAX_BATCH", "BufferClosed", "DemandMeter", "ReservationBuffer", "batch_size"]

logger = logging.getLogger("tokenpool.client")

_IDLE_WAKE_SECONDS = 1.0  # how often the refill thread looks for stale segments while idle
_MIN_PAUSE_AFTER_FAILURE = 1.0
_MAX_FETCHES_IN_FLIGHT = 4  # when demand outruns one batch per round trip
_RECENT_SECONDS = 5  # the demand the low mark follows (the batch size follows the whole window)

Fetch = Callable[[int], list[Reservation]]
Release = Callable[[list[str]], None]


class BufferClosed(Exception):
    """The buffer was closed: the client reserves without it."""


@dataclass(frozen=True, slots=True)
class _Ready:
    """One pair held, with its segment's end of use (monotonic) and the fetch's correlation id."""
    usable_until: float
    correlation_id: str
    reservation: Reservation


class ReservationBuffer:
    """Thread-safe; one per client (and so per process: a forked child starts empty)."""

    def __init__(self, *, fetch: Fetch, release: Release, buffer_seconds: float, safety_margin: float,
                 clock: Callable[[], float], close_timeout: float, wait_limit: float = 5.0) -> None:
        if buffer_seconds <= 0:
            raise ValueError("buffer_seconds must be positive")
        if safety_margin < 0:
            raise ValueError("buffer_safety_margin must not be negative")
        self._fetch, self._release = fetch, release
        self._buffer_seconds, self._margin = buffer_seconds, safety_margin
        self._clock, self._close_timeout, self._wait_limit = clock, close_timeout, wait_limit
        self._closed = False
        self._reset_state()

    def _reset_state(self) -> None:
        self._cond = threading.Condition()  # over an RLock: _pop_fresh discards with or without it held
        # The pairs held, oldest segment first. take()'s fast path pops from it without the lock
        # (deque.popleft is atomic): with 16 threads on one GIL, a lock holder preempted by the
        # interpreter's 5 ms switch held every other taker (reserve() p99 ≈ 5 ms); now only an empty
        # or stale front, the low mark and the bookkeeping below take the lock.
        self._ready: deque[_Ready] = deque()
        self._stale: list[str] = []
        # Pairs that ever entered the buffer, and those that left it other than by a hand-out (stale,
        # or drained by close): handed out = entered - held - left_otherwise, with no counter on the
        # fast path.
        self._entered = 0
        self._left_otherwise = 0
        self._metered = 0  # hand-outs already recorded in the demand meter
        self._low_hint = 0  # the low mark as last computed under the lock (read by the fast path)
        self._wake_sent = False
        self._meter = DemandMeter(self._clock)
        self._worker: threading.Thread | None = None
        self._wanted = False
        self._in_flight: list[threading.Thread] = []
        self._in_flight_pairs = 0
        self._last_size = 0
        self._fetch_seconds = 0.05  # a moving average of the refill round trip
        self._fetches_done = 0
        self._failure: Exception | None = None
        self._stalled = False  # a caller gave up waiting for the pending fetch (reset when one completes)
        self._retry_at = 0.0
        self._counters = {"refills": 0, "waste": 0, "released": 0}

    # ---- callers ------------------------------------------------------------------------------

    def take(self) -> Reservation:
        """The next fresh pair; waits for a fetch only when nothing is held. Raises the last fetch's
        failure when the buffer is empty and that fetch failed (or fetches are pausing after one)."""
        reservation = self._pop_fresh()
        if reservation is None:
            return self._take_waiting()
        if len(self._ready) <= self._low_hint and not self._wake_sent:
            self._wake_refill()
        self._log_handout(reservation)
        return reservation

    def _wake_refill(self) -> None:
        with self._cond:
            self._wake_sent = True
            self._cond.notify_all()

    def _take_waiting(self) -> Reservation:
        """``take`` when nothing fresh is held: under the lock, waiting for a fetch."""
        with self._cond:
            if self._closed:
                raise BufferClosed()
            self._ensure_worker()
            # This caller's demand counts now, before the fetch it waits for is sized (a quiet
            # process's first batch follows it); its hand-out is then not counted again.
            self._meter_catch_up()
            self._meter.record()
            asked, waiting_since = self._fetches_done, None
            while True:
                reservation = self._pop_fresh()
                if reservation is not None:
                    self._metered += 1
                    self._cond.notify_all()  # held at or below the low mark: the refill thread looks
                    self._log_handout(reservation)
                    return reservation
                if self._closed:
                    raise BufferClosed()
                if self._failure is not None and (self._fetches_done != asked or self._clock() < self._retry_at
                                                  or self._stalled):
                    raise self._failure
                waiting_since = self._clock() if waiting_since is None else waiting_since
                if self._clock() - waiting_since >= self._wait_limit:
                    raise self._give_up_waiting()
                if not self._wanted:
                    # Wake the refill thread once. Waiting callers never wake each other: each
                    # notify_all here woke every other waiter, which notified again, a livelock
                    # that kept a core busy per process while the buffer was empty (2 x 8 threads
                    # starved the server: docs/benchmarks.md, "Buffered client").
                    self._wanted = True
                    self._cond.notify_all()
                self._cond.wait(timeout=_IDLE_WAKE_SECONDS)

    def _give_up_waiting(self) -> TokenPoolUnavailable:
        """The pending fetch has not answered within the wait limit: this caller falls back, and so
        do the next ones until a fetch completes (``_fetched`` replaces the failure)."""
        self._failure = TokenPoolUnavailable(f"no refill answered within {self._wait_limit:g} s", code="timeout")
        self._stalled = True
        logger.warning("tokenpool_buffer_refill_pending", extra={"wait_limit": self._wait_limit,
                                                                 "correlation_id": get_correlation_id()})
        return self._failure

    @property
    def held(self) -> int:
        return len(self._ready)

    @property
    def counters(self) -> dict[str, int]:
        """handed_out, refills, waste, released (a snapshot)."""
        with self._cond:
            return {"handed_out": self._handed_out_locked(), **self._counters}

    def target(self) -> int:
        """The batch size the next fetch would ask for."""
        with self._cond:
            self._meter_catch_up()
            return self._target()

    def close(self) -> None:
        """Stop the refill thread and release every pair held (as few calls as possible)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            leftover = []
            while True:  # takers may still pop concurrently: each pair goes one way or the other
                try:
                    item = self._ready.popleft()
                except IndexError:
                    break
                self._left_otherwise += 1
                if item.reservation.reservation_id:
                    leftover.append(item.reservation.reservation_id)
            stale, self._stale = self._stale, []
            self._cond.notify_all()
            threads = [t for t in [self._worker, *self._in_flight] if t is not None]
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=self._close_timeout)
        self._give_back(stale, unused=False)
        self._give_back(leftover, unused=True)

    def after_fork_in_child(self) -> None:
        """In a forked child: forget the parent's pairs (never handed out here, never released
        here) and threads; the child fetches its own."""
        self._reset_state()

    # ---- internals (the lock is held by the caller where a name says _locked or it says so) -----

    def _target(self) -> int:
        return batch_size(self._meter.rate(), self._buffer_seconds)

    def _low_mark(self) -> int:
        """A batch (``buffer_seconds`` of demand), or more when the recent demand would eat that before
        a refill returns: once warm, what is held lasts ``buffer_seconds`` whenever TokenPool stops
        (half a batch left a stop that came just before a refill with half of it: measured 17 s of 30)."""
        rushing = int(self._meter.rate(_RECENT_SECONDS) * self._fetch_seconds * 2)
        return max(self._target(), rushing)

    def _next_size(self) -> int:
        """The target; doubled from the last batch when a caller had to wait (slow start)."""
        target = self._target()
        return min(MAX_BATCH, max(target, 2 * self._last_size)) if self._wanted else target

    def _handed_out_locked(self) -> int:
        return self._entered - len(self._ready) - self._left_otherwise

    def _meter_catch_up(self) -> None:
        """Record in the demand meter the hand-outs made since the last call (the fast path counts
        nothing itself)."""
        handed = self._handed_out_locked()
        self._meter.record(handed - self._metered)
        self._metered = handed

    def _pop_fresh(self) -> Reservation | None:
        """The next pair whose lease is not about to end, without the lock (deque.popleft is atomic:
        each pair goes to exactly one caller); None when nothing fresh is held."""
        while True:
            try:
                item = self._ready.popleft()
            except IndexError:
                return None
            if self._clock() < item.usable_until:
                return item.reservation
            with self._cond:  # its lease ends within the safety margin: never handed out (the lock is reentrant)
                self._discard([item])

    def _discard(self, items: list[_Ready]) -> None:
        """Pairs whose lease ends within the safety margin: released in the background, counted as waste."""
        self._left_otherwise += len(items)
        self._counters["waste"] += len(items)
        self._stale.extend(i.reservation.reservation_id for i in items if i.reservation.reservation_id)
        logger.warning("tokenpool_buffer_stale_pairs",
                       extra={"count": len(items), "correlation_id": items[0].correlation_id})
        self._cond.notify_all()

    def _discard_stale_locked(self) -> None:
        now, stale = self._clock(), []
        while True:  # segments arrive in fetch order, so the stale ones are at the front
            try:
                item = self._ready.popleft()
            except IndexError:
                break
            if now < item.usable_until:
                self._ready.appendleft(item)  # a taker may have popped the front meanwhile: put it back
                break
            stale.append(item)
        if stale:
            self._discard(stale)

    def _needs_fetch(self) -> bool:
        if len(self._in_flight) >= _MAX_FETCHES_IN_FLIGHT or self._clock() < self._retry_at:
            return False
        if self._wanted and not self._in_flight:
            return True
        # Below the low mark counting what is on its way (a batch held, or arriving, is enough).
        return len(self._ready) + self._in_flight_pairs < self._low_mark() and self._meter.rate() > 0

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._run, name="tokenpool-buffer-refill", daemon=True)
            self._worker.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._stale and not self._needs_fetch():
                    self._low_hint, self._wake_sent = self._low_mark(), False
                    self._cond.wait(timeout=_IDLE_WAKE_SECONDS)
                    self._meter_catch_up()
                    self._discard_stale_locked()
                if self._closed:
                    return
                stale, self._stale = self._stale, []
                self._meter_catch_up()
                size = self._next_size() if self._needs_fetch() else 0
                self._low_hint, self._wake_sent = self._low_mark(), False
                if size:
                    fetcher = threading.Thread(target=self._refill, args=(size,), name="tokenpool-buffer-fetch",
                                               daemon=True)
                    self._in_flight.append(fetcher)
                    self._in_flight_pairs += size
                    self._last_size = size
                    fetcher.start()
            self._give_back(stale, unused=False)

    def _refill(self, size: int) -> None:
        correlation_id = new_correlation_id()
        sent = self._clock()
        try:
            with correlation_scope(correlation_id):
                pairs = self._fetch(size)
        except Exception as exc:  # noqa: BLE001 - every failure is handed to the callers waiting on it
            self._fetched(None, size, failure=exc)
            logger.warning("tokenpool_buffer_refill_failed",
                           extra={"size": size, "error": type(exc).__name__, "correlation_id": correlation_id})
            return
        usable_until = sent + self._usable_seconds(pairs)
        segment = [_Ready(usable_until, correlation_id, pair) for pair in pairs]
        self._fetch_seconds = 0.8 * self._fetch_seconds + 0.2 * max(0.0, self._clock() - sent)
        if not self._fetched(segment, size, failure=None):
            self._give_back([p.reservation_id for p in pairs if p.reservation_id], unused=True)
        logger.info("tokenpool_buffer_refill", extra={"size": len(pairs), "correlation_id": correlation_id})

    def _usable_seconds(self, pairs: list[Reservation]) -> float:
        first = pairs[0] if pairs else None
        if first is None or first.expires_at is None:
            return 0.0
        lease = (first.expires_at - first.reserved_at).total_seconds()
        return lease - min(self._margin, lease / 2)

    def _fetched(self, segment: list[_Ready] | None, size: int, *, failure: Exception | None) -> bool:
        """Record a fetch's outcome; False when the buffer closed meanwhile (the pairs are not kept)."""
        with self._cond:
            self._wanted = False
            self._in_flight = [t for t in self._in_flight if t is not threading.current_thread()]
            self._in_flight_pairs -= size
            self._fetches_done += 1
            self._failure, self._stalled = failure, False
            if failure is not None:
                retry_after = getattr(failure, "retry_after", None) or 0.0
                self._retry_at = self._clock() + max(_MIN_PAUSE_AFTER_FAILURE, float(retry_after))
            self._cond.notify_all()
            if segment is None:
                return True
            if self._closed:
                return False
            self._entered += len(segment)
            self._ready.extend(segment)
            self._counters["refills"] += 1
            return True

    def _give_back(self, reservation_ids: list[str], *, unused: bool) -> None:
        """Release pairs (RETIRED): unused ones at close count as ``released``, stale ones were
        counted as waste already. A failed release leaves them to expire (waste, logged)."""
        if not reservation_ids:
            return
        try:
            with correlation_scope(get_correlation_id() or new_correlation_id()) as correlation_id:
                self._release(reservation_ids)
        except Exception as exc:  # noqa: BLE001 - nothing to do but let the leases expire
            with self._cond:
                if unused:
                    self._counters["waste"] += len(reservation_ids)
            logger.warning("tokenpool_buffer_release_failed",
                           extra={"count": len(reservation_ids), "error": type(exc).__name__,
                                  "correlation_id": correlation_id})
            return
        with self._cond:
            if unused:
                self._counters["released"] += len(reservation_ids)
        logger.info("tokenpool_buffer_released", extra={"count": len(reservation_ids), "unused": unused,
                                                        "correlation_id": correlation_id})

    def _log_handout(self, reservation: Reservation) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("tokenpool_buffer_handout",
                         extra={"reservation_id": reservation.reservation_id, "held": len(self._ready),
                                "correlation_id": get_correlation_id()})
