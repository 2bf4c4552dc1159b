"""What a buffer's batch size follows: the demand measured over the last minute (tokenpool_tome/buffer.py).

An internal module of the package: the client API is ``TokenPoolClient``'s.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

__all__ = ["DEMAND_WINDOW_SECONDS", "MAX_BATCH", "DemandMeter", "batch_size"]

MAX_BATCH = 500  # the server's limit on reservations/batch
DEMAND_WINDOW_SECONDS = 60.0


def batch_size(rate: float, buffer_seconds: float) -> int:
    """About ``buffer_seconds`` of demand at ``rate`` pairs/s, between 1 and 500."""
    return max(1, min(MAX_BATCH, math.ceil(rate * buffer_seconds)))


class DemandMeter:
    """Pairs asked for per second over the last ``window`` seconds, in one-second buckets. Always
    divided by the whole window, so one reservation in a quiet minute sizes a batch of one pair
    (a young process's demand is underestimated for its first minute: its batches grow as it runs)."""

    def __init__(self, clock: Callable[[], float], window: float = DEMAND_WINDOW_SECONDS) -> None:
        self._clock = clock
        self._window = window
        self._buckets: deque[list[int]] = deque()  # [second, count]
        self._total = 0  # the buckets' sum: every take asks for the rate, under the buffer's lock

    def record(self, count: int = 1) -> None:
        if count <= 0:
            return
        second = int(self._clock())
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += count
        else:
            self._buckets.append([second, count])
        self._total += count
        self._prune(second)

    def rate(self, recent: float | None = None) -> float:
        """Over the whole window, or over the last ``recent`` seconds (newest buckets first, so the
        cost is that of ``recent`` buckets at most: it runs on every take, under the lock)."""
        now = int(self._clock())
        self._prune(now)
        if recent is None:
            return self._total / self._window
        count = 0
        for second, n in reversed(self._buckets):
            if second <= now - recent:
                break
            count += n
        return count / recent

    def _prune(self, second: int) -> None:
        while self._buckets and self._buckets[0][0] <= second - self._window:
            self._total -= self._buckets.popleft()[1]
