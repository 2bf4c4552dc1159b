"""How long to wait between attempts, shared by both clients through ``http_layer``.

An internal module of the package: not part of the client API of contract section 5.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import httpx
from tenacity import RetryCallState, wait_exponential, wait_random
from tenacity.wait import wait_base

__all__ = ["RETRYABLE_TRANSPORT_ERRORS", "RetryPolicy", "retry_after_seconds"]

# Failures worth another attempt: no answer, or the server hung up mid-answer.
RETRYABLE_TRANSPORT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass
class RetryPolicy:
    """Attempts per logical call and the pause between them.

    The pause is exponential backoff (``backoff_initial·2^(n-1)``) plus up to ``backoff_initial`` of
    jitter, capped at ``backoff_max``. When the failed attempt carried a ``Retry-After`` (read from
    the ``retry_after`` attribute of the exception being retried), that pacing wins, but never
    shorter than the backoff and never longer than ``retry_after_max``, so one call cannot park its
    thread for minutes.
    """

    max_attempts: int
    backoff_initial: float
    backoff_max: float
    retry_after_max: float
    # Spelled with long-standing tenacity waits so the wheel works across tenacity 8 and 9.
    _backoff: wait_base = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._backoff = (wait_exponential(multiplier=self.backoff_initial, max=self.backoff_max)
                         + wait_random(0, self.backoff_initial))

    def pause(self, retry_state: RetryCallState) -> float:
        """Seconds to sleep before the next attempt (tenacity's ``wait`` callback)."""
        pause = min(float(self._backoff(retry_state)), self.backoff_max)
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(failure, "retry_after", None)
        if retry_after is not None:
            return min(max(float(retry_after), pause), self.retry_after_max)
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
