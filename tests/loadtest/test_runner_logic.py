"""The load test's decisions without a server: find-max's stepping, TOME counter deltas, the
plan comparison's arithmetic, and the engine's duplicate and error accounting."""
from __future__ import annotations

from typing import Any

import pytest

from loadtest import runner
from loadtest.approaches import Created
from loadtest.engine import PhaseResult, record_ms, run_phase
from loadtest.runner import LoadtestConfig, comparison, find_max
from loadtest.tome_admin import TomeStats


class _Named:
    name = "pool"


def _phase(rate: float, *, p99_ms: float, errors: int = 0, lag_ms: float = 0.5) -> PhaseResult:
    phase = PhaseResult(approach="pool", rate=rate, duration=1.0, workers=4, cards=10)
    for histogram in (phase.create, phase.detokenize):
        record_ms(histogram, p99_ms)
    record_ms(phase.start_lag, lag_ms)
    if errors:
        phase.errors["pool_unavailable"] = errors
    return phase


@pytest.fixture
def breaks_above(monkeypatch: pytest.MonkeyPatch) -> Any:
    """run_phase replaced by a server that answers in 5 ms up to ``limit`` cards/s and 80 ms above."""
    tried: list[float] = []

    def install(limit: float, *, error_above: bool = False) -> list[float]:
        def fake_run_phase(*, rate: float, **kwargs: Any) -> PhaseResult:
            tried.append(rate)
            if rate <= limit:
                return _phase(rate, p99_ms=5)
            return _phase(rate, p99_ms=5, errors=3) if error_above else _phase(rate, p99_ms=80)
        monkeypatch.setattr(runner, "run_phase", fake_run_phase)
        return tried

    return install


def test_find_max_doubles_then_bisects_between_last_good_and_first_bad(breaks_above: Any) -> None:
    tried = breaks_above(30)
    result = find_max(_Named(), LoadtestConfig(base_url="x", api_key="k", find_max_start=5, refine_steps=2),
                      log=lambda line: None)
    assert tried == [5, 10, 20, 40, 30, 35]
    assert result["max_rate"] == 30 and result["first_broken_rate"] == 35
    assert result["headroom"] == round(30 / (50_000 / 86_400), 1)
    assert result["stopped_because"] == "p99 ≥ 50 ms at 40.0 cards/s"


def test_find_max_stops_on_errors_even_when_fast(breaks_above: Any) -> None:
    breaks_above(10, error_above=True)
    result = find_max(_Named(), LoadtestConfig(base_url="x", api_key="k", find_max_start=5, refine_steps=0),
                      log=lambda line: None)
    assert result["max_rate"] == 10 and result["stopped_because"].startswith("errors at 20.0 cards/s")


def test_find_max_halves_down_when_the_start_rate_already_breaks(breaks_above: Any) -> None:
    tried = breaks_above(1.0)
    result = find_max(_Named(), LoadtestConfig(base_url="x", api_key="k", find_max_start=4, refine_steps=0),
                      log=lambda line: None)
    assert tried == [4, 2, 1]
    assert result["max_rate"] == 1 and result["first_broken_rate"] == 2


def test_find_max_reports_no_rate_when_even_half_the_plan_rate_breaks(breaks_above: Any) -> None:
    breaks_above(0.0)
    result = find_max(_Named(), LoadtestConfig(base_url="x", api_key="k", find_max_start=1, refine_steps=0),
                      log=lambda line: None)
    assert result["max_rate"] is None and result["headroom"] is None


def test_a_lagging_client_breaks_nothing_under_50ms_and_marks_a_broken_step_as_a_lower_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Latencies run from the schedule, so the client's lag is already inside them.
    monkeypatch.setattr(runner, "run_phase", lambda *, rate, **kw: _phase(rate, p99_ms=30 if rate <= 10 else 70,
                                                                          lag_ms=25))
    result = find_max(_Named(), LoadtestConfig(base_url="x", api_key="k", find_max_start=5, refine_steps=0),
                      log=lambda line: None)
    assert result["max_rate"] == 10
    assert result["stopped_because"] == ("p99 ≥ 50 ms at 20.0 cards/s "
                                         "(the load generator also fell behind: a lower bound)")


def test_tome_stats_deltas_count_only_calls_made_in_between() -> None:
    before = TomeStats.from_body({"calls": {"ns1": {"tokenize": {"ok": 5, "error": 1}}}, "items": {}})
    after = TomeStats.from_body({"calls": {"ns1": {"tokenize": {"ok": 9, "error": 2}},
                                           "ns2": {"generate": {"ok": 1, "error": 0}}},
                                 "items": {"ns2": {"generate": 1000}}})
    delta = after - before
    assert delta.total == 6
    assert delta.by_operation() == {"ns1 tokenize": 5, "ns2 generate": 1}
    assert delta.errors == {("ns1", "tokenize"): 1} and delta.items == {("ns2", "generate"): 1000}


def _approach_row(*, cards: int, tome_calls: int, fill_calls: int = 0, generated: int = 0) -> dict[str, Any]:
    return {"cards_created": cards, "tome_calls": tome_calls, "tome_fill_calls": fill_calls,
            "tome_pairs_generated": generated}


def test_comparison_amortises_a_refill_seen_in_the_run_over_the_pairs_it_made() -> None:
    report = {"approaches": {
        "pool": _approach_row(cards=500, tome_calls=12, fill_calls=10, generated=5000),
        "library": _approach_row(cards=500, tome_calls=1500)}}
    rows = comparison(report, LoadtestConfig(base_url="x", api_key="k", refill_batch_size=1000))["tome_calls_per_day"]
    assert rows["library"]["measured_tome_calls_per_day"] == 150_000
    # 2 request-path calls over 500 cards + 10 fill calls per 5,000 pairs, times 50,000 cards.
    assert rows["pool"]["measured_tome_calls_per_day"] == round((2 / 500 + 10 / 5000) * 50_000) == 300
    assert rows["pool"]["plan_tome_calls_per_day"] == 100_000 and rows["library"]["plan_tome_calls_per_day"] == 200_000


def test_comparison_uses_the_batch_size_when_no_refill_ran() -> None:
    report = {"approaches": {"pool": _approach_row(cards=100, tome_calls=0)}}
    rows = comparison(report, LoadtestConfig(base_url="x", api_key="k", refill_batch_size=500))["tome_calls_per_day"]
    assert rows["pool"]["measured_tome_calls_per_day"] == 200


class _Scripted:
    """Hands out the given pairs in order; detokenize answers from what it handed out."""

    name = "pool"

    def __init__(self, pairs: list[tuple[str, str]], *, fail_every: int = 0) -> None:
        self._pairs, self._fail_every, self._n = list(pairs), fail_every, 0
        self._issued: dict[str, str] = {}

    def create(self) -> Created:
        self._n += 1
        if self._fail_every and self._n % self._fail_every == 0:
            raise _Unavailable()
        internal, external = self._pairs.pop(0)
        self._issued[external] = internal
        return Created(internal, external, "pool")

    def detokenize(self, external_ref_id: str) -> str | None:
        return self._issued.get(external_ref_id)

    def close(self) -> None:
        pass


class _Unavailable(Exception):
    code = "pool_unavailable"


def test_engine_counts_every_pair_seen_twice_as_a_duplicate_and_errors_by_code() -> None:
    pairs = [("1", "e1"), ("2", "e2"), ("1", "e3"), ("4", "e2"), ("5", "e5"), ("6", "e6")]
    phase = run_phase(approach=_Scripted(pairs, fail_every=4), rate=400, duration=0.02, workers=1, progress=False)
    assert phase.cards == 8
    # Cards 4 and 8 fail; the six others take the pairs in order: ("1","e3") and ("4","e2") repeat a half.
    assert phase.created == 6 and phase.duplicates == 2
    assert dict(phase.errors) == {"pool_unavailable": 2}
    assert phase.create.get_total_count() == phase.detokenize.get_total_count() == 6
