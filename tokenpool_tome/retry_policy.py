"""The retry policy both clients share (``HttpTokenizationLibrary`` and ``TokenPoolClient``).

An internal module of the package: its names are public so the two clients can use them without
reaching into each other's privates, but the package does not re-export them (not part of the
client API of contract section 5).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

__all__ = ["RETRYABLE_TRANSPORT_ERRORS", "retry_after_seconds", "retry_wait"]

# Failures worth another attempt: no answer, or the server hung up mid-answer.
RETRYABLE_TRANSPORT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def retry_wait(backoff: Callable[[Any], float], retry_state: Any, *, backoff_max: float,
               retry_after_max: float) -> float:
    """The retry policy's pause before the next attempt: the exponential ``backoff`` with jitter,
    capped at ``backoff_max``; or, when the failed attempt carried a ``Retry-After``
    (``retry_after`` on the retried exception), that pacing, never shorter than the backoff and
    never longer than ``retry_after_max``."""
    pause = min(backoff(retry_state), backoff_max)
    exc = retry_state.outcome.exception() if retry_state.outcome else None
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        return min(max(retry_after, pause), retry_after_max)
    return pause


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Seconds asked for by the answer's ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    raw = response.headers.get("Retry-After")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)
