"""The low-watermark trigger: after a reservation, queue a refill when the pool runs low.

Wired to the pool room's ``pairs_reserved`` signal (sent after the reservation commits) by
``refill/signals.py``: pool never imports refill.

This sits on the reservation hot path, so it costs little there: an in-memory rate limit per pool
and process, and at most once a second per pool and process the database work — a bounded count
and, when low, the lease + enqueue of ``refill_request``. The pool room sends the signal from
``transaction.on_commit`` (pool/services/reservations.py), so that work runs after the
reservation has committed, outside its transaction, and never for one that rolled back.
"""
from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import connection

from pool.selectors import pool_available_up_to
from refill.models import RefillTrigger
from refill.services import refill_request

logger = logging.getLogger("tokenpool.refill")

_last_check: dict[int, float] = {}
_last_check_lock = threading.Lock()
# A burst of reservations inside one rate-limit window must still end with a check, or a pool
# drained in a second would wait for the next reservation to notice: one trailing timer per pool.
_trailing: dict[int, threading.Timer] = {}


def on_pairs_reserved(*, pool, count: int) -> None:
    """Called (through ``pairs_reserved``) after each committed reservation of ``count`` pairs."""
    if not pool.refill_enabled or pool.low_watermark <= 0:
        return
    interval = settings.REFILL_TRIGGER_MIN_INTERVAL_SECONDS
    now = time.monotonic()
    with _last_check_lock:
        last = _last_check.get(pool.pk)
        if last is not None and now - last < interval:
            if pool.pk not in _trailing:
                timer = threading.Timer(interval - (now - last), _trailing_check, kwargs={"pool": pool})
                timer.daemon = True
                _trailing[pool.pk] = timer
                timer.start()
            return
        _last_check[pool.pk] = now
    # No on_commit of our own: the signal already arrives after the commit, with no transaction
    # open. A failure here is logged and never fails the reservation (_check_and_request).
    _check_and_request(pool=pool)


def _trailing_check(*, pool) -> None:
    with _last_check_lock:
        _trailing.pop(pool.pk, None)
        _last_check[pool.pk] = time.monotonic()
    try:
        _check_and_request(pool=pool)
    finally:
        connection.close()  # this timer thread's own connection


def _check_and_request(*, pool) -> None:
    try:
        if pool_below_low_watermark(pool=pool):
            refill_request(pool=pool, trigger=RefillTrigger.LOW_WATERMARK)
    except Exception:
        logger.exception("refill_trigger_failed", extra={"pool": getattr(pool, "name", None)})


def pool_below_low_watermark(*, pool) -> bool:
    """``available < low_watermark`` without counting the whole pool (bounded by the watermark)."""
    return pool_available_up_to(pool=pool, limit=pool.low_watermark) < pool.low_watermark


def reset_rate_limit() -> None:
    """Forget the per-process rate-limit state (tests)."""
    with _last_check_lock:
        _last_check.clear()
        for timer in _trailing.values():
            timer.cancel()
        _trailing.clear()
