"""Counting the TOME HTTP calls (retries included) a refill run makes."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tokenpool_tome.client import CallRecord
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


def _count(*, record: CallRecord, **kwargs: object) -> None:
    if record.correlation_id is None:
        return
    counter = _counters.get(record.correlation_id)
    if counter is not None:
        counter.value += 1


# Connected directly rather than with @receiver (which would make ``_count`` untyped for mypy).
tome_call.connect(_count, dispatch_uid="refill_count_tome_calls")
