"""A small thread-safe circuit breaker for TOME calls (no Django import).

Written here rather than taken from pybreaker because the client needs exactly these rules and
pybreaker's half-open state lets every concurrent caller through, not one trial:
- CLOSED: calls pass; ``failure_threshold`` consecutive failed logical calls open the circuit.
- OPEN: calls fail fast with ``CircuitOpenError`` (retry_after = seconds until half-open).
- HALF_OPEN (``reset_seconds`` after opening): exactly one trial call passes, the others fail
  fast; the trial's success closes the circuit, its failure re-opens it for another period.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from tokenpool_tome.errors import CircuitOpenError

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


def log_state_changes(logger: logging.Logger, event: str) -> Callable[[str, str], None]:
    """An ``on_change`` that logs each transition: a warning when the circuit opens or half-opens
    (an outage is starting or being probed), info when it closes again."""

    def on_change(old: str, new: str) -> None:
        log = logger.warning if new != CLOSED else logger.info
        log(event, extra={"previous_state": old, "state": new})

    return on_change


class CircuitBreaker:
    def __init__(self, *, failure_threshold: int, reset_seconds: float,
                 clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[str, str], None] | None = None) -> None:
        # on_change(old, new) runs under the breaker's lock: it must not call back into it.
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_seconds < 0:
            raise ValueError("reset_seconds must not be negative")
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False

    @property
    def state(self) -> str:
        """The state a call made now would see (an expired OPEN reads as HALF_OPEN)."""
        with self._lock:
            if self._state == OPEN and self._clock() >= self._opened_at + self.reset_seconds:
                return HALF_OPEN
            return self._state

    @property
    def consecutive_failures(self) -> int:
        with self._lock:
            return self._failures

    def before_call(self) -> None:
        """Admit a call or raise ``CircuitOpenError``; an admitted call must end in exactly one of
        ``record_success``, ``record_failure`` or ``release``."""
        with self._lock:
            if self._state == CLOSED:
                return
            now = self._clock()
            if self._state == OPEN:
                remaining = self._opened_at + self.reset_seconds - now
                if remaining > 0:
                    raise CircuitOpenError(retry_after=remaining)
                self._transition(HALF_OPEN)
            # HALF_OPEN: a single trial at a time, everyone else keeps failing fast.
            if self._trial_in_flight:
                # If the trial fails the next one comes a full period later.
                raise CircuitOpenError(retry_after=self.reset_seconds)
            self._trial_in_flight = True

    def record_success(self) -> None:
        with self._lock:
            self._close()

    def record_failure(self) -> None:
        with self._lock:
            self._trial_in_flight = False
            if self._state == HALF_OPEN:
                self._open()
                return
            self._failures += 1
            if self._state == CLOSED and self._failures >= self.failure_threshold:
                self._open()

    def release(self) -> None:
        """End an admitted call that proved nothing about TOME's health (e.g. a local bug)."""
        with self._lock:
            self._trial_in_flight = False

    def reset(self) -> None:
        with self._lock:
            self._close()

    def after_fork_in_child(self) -> None:
        """A fresh lock (another thread may have held the parent's at the fork) and a closed circuit."""
        self._lock = threading.Lock()
        self._close()

    def _close(self) -> None:
        self._failures = 0
        self._trial_in_flight = False
        if self._state != CLOSED:
            self._transition(CLOSED)

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._transition(OPEN)

    def _transition(self, new_state: str) -> None:
        old_state, self._state = self._state, new_state
        if new_state == CLOSED:
            self._failures = 0
        if self._on_change is not None and old_state != new_state:
            self._on_change(old_state, new_state)
