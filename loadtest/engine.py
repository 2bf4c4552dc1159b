"""Open-loop card arrivals against one approach, measured without coordinated omission.

Card *i* is scheduled at ``start + i / rate`` whatever happened to earlier cards; a scheduler
thread hands it to a worker pool at that instant, and its create latency runs from the scheduled
instant to the end of the create, so a stalled server (or a worker pool that had no free thread)
shows up as latency instead of as fewer requests. The detokenize follows the create in the same
worker and is timed from its own start. How late cards actually started (``start_lag``) is
reported so a client that could not keep up is visible rather than blamed on the server.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram
from tqdm import tqdm

from loadtest.approaches import Approach, Created, error_code

# HDR range in microseconds: 1 µs .. 1 h, 3 significant digits (0.1 % resolution).
_HDR_MAX_US = 3_600_000_000
# A client whose cards start this late (p99) was itself a bottleneck; its numbers need a bigger box.
CLIENT_LAG_LIMIT_MS = 10.0


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, _HDR_MAX_US, 3)


def record_ms(histogram: HdrHistogram, ms: float) -> None:
    histogram.record_value(min(max(int(ms * 1000), 1), _HDR_MAX_US))


def summary_ms(histogram: HdrHistogram) -> dict[str, float | None]:
    """p50/p95/p99/max in ms (None when nothing was recorded)."""
    if histogram.get_total_count() == 0:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    value = histogram.get_value_at_percentile
    return {"p50": round(value(50) / 1000, 2), "p95": round(value(95) / 1000, 2),
            "p99": round(value(99) / 1000, 2), "max": round(histogram.get_max_value() / 1000, 2)}


def _nearest_rank(sorted_values: list[float], percentile: float) -> float:
    index = max(0, min(len(sorted_values) - 1, int(-(-percentile * len(sorted_values) // 100)) - 1))
    return sorted_values[index]


@dataclass
class Window:
    """One second of scheduled arrivals."""

    create_ms: list[float] = field(default_factory=list)
    detokenize_ms: list[float] = field(default_factory=list)
    cards: int = 0
    errors: int = 0

    def as_dict(self, second: int) -> dict[str, Any]:
        def cut(values: list[float]) -> dict[str, float | None]:
            if not values:
                return {"p50": None, "p95": None, "p99": None}
            ordered = sorted(values)
            return {f"p{p}": round(_nearest_rank(ordered, p), 2) for p in (50, 95, 99)}
        return {"t": second, "cards": self.cards, "errors": self.errors,
                "create": cut(self.create_ms), "detokenize": cut(self.detokenize_ms)}


@dataclass
class PhaseResult:
    approach: str
    rate: float
    duration: float
    workers: int
    cards: int = 0
    created: int = 0
    detokenized: int = 0
    duplicates: int = 0
    errors: Counter = field(default_factory=Counter)
    sources: Counter = field(default_factory=Counter)
    create: HdrHistogram = field(default_factory=new_histogram)
    detokenize: HdrHistogram = field(default_factory=new_histogram)
    start_lag: HdrHistogram = field(default_factory=new_histogram)
    windows: dict[int, Window] = field(default_factory=dict)
    elapsed: float = 0.0
    busy_peak: int = 0
    internal_tokens: set[str] = field(default_factory=set, repr=False)
    external_ref_ids: set[str] = field(default_factory=set, repr=False)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def client_fell_behind(self) -> bool:
        return self.start_lag.get_total_count() > 0 and \
            self.start_lag.get_value_at_percentile(99) / 1000 > CLIENT_LAG_LIMIT_MS

    def p99_ms(self) -> float:
        """The worse of create and detokenize p99 (inf when nothing succeeded)."""
        values = [h.get_value_at_percentile(99) / 1000 for h in (self.create, self.detokenize)
                  if h.get_total_count()]
        return max(values) if len(values) == 2 else float("inf")

    def record(self, card: CardOutcome, *, window_key: int) -> None:
        """Count one card's outcome (the caller holds the phase's lock)."""
        window = self.windows.setdefault(window_key, Window())
        window.cards += 1
        if card.created is not None:
            self.created += 1
            self.sources[card.created.source] += 1
            record_ms(self.create, card.create_ms)
            window.create_ms.append(card.create_ms)
            # A pair is handed out at most once, ever: either half seen before is a duplicate.
            if card.created.internal_token in self.internal_tokens or \
                    card.created.external_ref_id in self.external_ref_ids:
                self.duplicates += 1
            self.internal_tokens.add(card.created.internal_token)
            self.external_ref_ids.add(card.created.external_ref_id)
        if card.detokenize_ms is not None:
            self.detokenized += 1
            record_ms(self.detokenize, card.detokenize_ms)
            window.detokenize_ms.append(card.detokenize_ms)
        if card.failure is not None:
            self.errors[card.failure] += 1
            window.errors += 1


@dataclass
class CardOutcome:
    """One card: the pair created (None on failure), both latencies (ms, None when not reached) and
    the failure's code."""
    created: Created | None = None
    create_ms: float | None = None
    detokenize_ms: float | None = None
    failure: str | None = None


def run_card(approach: Approach, *, scheduled: float) -> CardOutcome:
    """Create a pair and detokenize it back; create latency from the card's scheduled start."""
    card = CardOutcome()
    try:
        card.created = approach.create()
        card.create_ms = (time.perf_counter() - scheduled) * 1000
        detokenize_started = time.perf_counter()
        answer = approach.detokenize(card.created.external_ref_id)
        if answer is None:
            card.failure = "detokenize_not_found"
        elif answer != card.created.internal_token:
            card.failure = "detokenize_mismatch"
        else:
            card.detokenize_ms = (time.perf_counter() - detokenize_started) * 1000
    except Exception as exc:  # noqa: BLE001 - every failure is counted by its code, none stops the run
        card.failure = error_code(exc)
    return card


class _Progress:
    """tqdm on stderr when it is a terminal (the table goes to stdout), nothing otherwise."""

    def __init__(self, *, total: int, label: str, enabled: bool) -> None:
        self._bar = None
        if enabled and sys.stderr.isatty():
            self._bar = tqdm(total=total, desc=label, unit="card", file=sys.stderr, leave=False,
                             dynamic_ncols=True)
        self._lock = threading.Lock()

    def update(self, errors: int) -> None:
        if self._bar is not None:
            with self._lock:
                self._bar.update(1)
                if errors:
                    self._bar.set_postfix(errors=errors, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def run_phase(*, approach: Approach, rate: float, duration: float, workers: int,
              progress: bool = True, label: str | None = None) -> PhaseResult:
    """Schedule ``round(rate × duration)`` cards (at least one) at ``rate`` per second and wait for all."""
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    total = max(1, round(rate * duration))
    result = PhaseResult(approach=approach.name, rate=rate, duration=duration, workers=workers, cards=total)
    lock = threading.Lock()
    busy = [0]
    bar = _Progress(total=total, label=label or f"{approach.name} {rate:.2f}/s", enabled=progress)

    def card(scheduled: float, origin: float) -> None:
        started = time.perf_counter()
        with lock:
            busy[0] += 1
            result.busy_peak = max(result.busy_peak, busy[0])
        outcome = run_card(approach, scheduled=scheduled)
        with lock:
            busy[0] -= 1
            record_ms(result.start_lag, (started - scheduled) * 1000)
            result.record(outcome, window_key=int(scheduled - origin))
            errors = result.error_count
        bar.update(errors)

    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"loadtest-{approach.name}")
    origin = time.perf_counter() + 0.05
    try:
        for index in range(total):
            scheduled = origin + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            executor.submit(card, scheduled, origin)
    finally:
        executor.shutdown(wait=True)
        result.elapsed = time.perf_counter() - origin
        bar.close()
    return result
