"""Counting the TOME HTTP calls (retries included) a refill run makes."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.dispatch import receiver

from tome.provider import tome_call


class Counter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


_counters: dict[str, Counter] = {}
_counters_lock = threading.Lock()


@contextmanager
def tome_call_counter(correlation_id: str) -> Iterator[Counter]:
    """Count the HTTP calls (retries included) the process-wide client makes for this run.

    The client is shared by every thread of the process, so its totals cannot be diffed; each call
    carries the run's own correlation id, which can."""
    counter = Counter()
    with _counters_lock:
        _counters[correlation_id] = counter
    try:
        yield counter
    finally:
        with _counters_lock:
            _counters.pop(correlation_id, None)


@receiver(tome_call, dispatch_uid="refill_count_tome_calls")
def _count(*, record, **kwargs) -> None:  # noqa: ANN001 - a tokenpool_tome.client.CallRecord
    counter = _counters.get(record.correlation_id)
    if counter is not None:
        counter.value += 1
