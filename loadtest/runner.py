"""One load test run: set TOME's latency, drive each approach, count TOME's calls, compare with the plan.

The approaches run one after the other, each with the same schedule and the same injected TOME
latency, because TOME's counters are global: run together, a refill triggered by the pool
approach could not be told apart from the library approach's live calls. Each phase's TOME calls
are the emulator's counters after the phase has gone quiet minus before it started, so a refill
the phase triggered is charged to it.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from loadtest.approaches import Approach, BufferedPoolApproach, LibraryApproach, PoolApproach
from loadtest.engine import PhaseResult, run_phase, summary_ms
from loadtest.tome_admin import TomeAdmin, TomeStats
from monitoring.numbers import LIVE_CALLS_BASIS, LIVE_CALLS_PER_CARD, calls_per_card

PLAN_CARDS_PER_DAY = 50_000
PLAN_RATE = PLAN_CARDS_PER_DAY / 86_400  # 0.5787 cards/s
# The original plan's "Impact at 50K cards/day" (shared/seed/tokenization-task-list.txt).
PLAN_TOME_CALLS_PER_DAY = {"library": 200_000, "pool": 100_000, "buffered": 100_000}
PLAN_WORDING = {"library": "JAR Approach: 200K TOME calls/day (2 calls per operation)",
                "pool": "Prefetch Approach: 100K TOME calls/day (50% reduction)",
                "buffered": "Prefetch Approach, buffered client: 100K TOME calls/day (50% reduction)"}
P99_LIMIT_MS = 50.0
MIN_STEP_CARDS = 20
APPROACHES = ("pool", "library")  # --approach both
ALL_APPROACHES = (*APPROACHES, "buffered")  # buffered: TokenPoolClient(buffer=True), issue 22


@dataclass(frozen=True)
class LoadtestConfig:
    base_url: str
    api_key: str
    approaches: tuple[str, ...] = APPROACHES
    cards_per_day: int = PLAN_CARDS_PER_DAY
    speedup: float = 1.0
    duration: float = 60.0
    pool: str = "default"
    tome_url: str = "http://127.0.0.1:8900"
    tome_token: str = "dev-tome-token"
    tome_admin_token: str = "dev-tome-admin"
    ns1: str = "ns1"
    ns2: str = "ns2"
    tome_latency_ms: int | None = 20  # None: leave the emulator's latency as it is
    timeout: float = 5.0
    workers: int = 256
    warmup_cards: int = 3
    find_max: bool = False
    find_max_start: float = 5.0
    find_max_limit: float = 2000.0
    step_seconds: float = 10.0
    refine_steps: int = 2
    refill_batch_size: int | None = None  # the pool's batch size, to amortise refills no run observed
    progress: bool = True

    @property
    def rate(self) -> float:
        return self.cards_per_day * self.speedup / 86_400


def make_approach(name: str, config: LoadtestConfig) -> Approach:
    if name == "pool":
        return PoolApproach(base_url=config.base_url, api_key=config.api_key, pool=config.pool,
                            timeout=config.timeout)
    if name == "buffered":
        return BufferedPoolApproach(base_url=config.base_url, api_key=config.api_key, pool=config.pool,
                                    timeout=config.timeout)
    if name == "library":
        return LibraryApproach(base_url=config.tome_url, api_token=config.tome_token, ns1=config.ns1,
                               ns2=config.ns2, timeout=config.timeout)
    raise ValueError(f"unknown approach {name!r}")


def run_loadtest(config: LoadtestConfig, *, log: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Run every approach of ``config`` (and ``--find-max`` when asked); the report as a dict."""
    admin = TomeAdmin(base_url=config.tome_url, admin_token=config.tome_admin_token)
    saved_faults = admin.faults()
    report: dict[str, Any] = {"approaches": {}, "config": _config_dict(config)}
    try:
        if config.tome_latency_ms is not None:
            admin.set_faults(latency_ms=config.tome_latency_ms, jitter_ms=0)
        report["tome"] = {"url": config.tome_url, "latency_ms": admin.faults()["latency_ms"],
                          "latency_before_run_ms": saved_faults["latency_ms"]}
        phases: dict[str, PhaseResult] = {}
        for name in config.approaches:
            approach = make_approach(name, config)
            try:
                _warm_up(approach, cards=config.warmup_cards)
                before = admin.settle()
                log(f"{name}: {config.rate:.4f} cards/s for {config.duration:g} s "
                    f"({max(1, round(config.rate * config.duration))} cards)")
                phase = run_phase(approach=approach, rate=config.rate, duration=config.duration,
                                  workers=config.workers, progress=config.progress)
                tome = admin.settle() - before
                phases[name] = phase
                report["approaches"][name] = approach_report(phase, tome)
                if config.find_max:
                    report.setdefault("find_max", {})[name] = find_max(approach, config, log=log)
            finally:
                approach.close()
        report["duplicates_across_approaches"] = _cross_duplicates(phases)
        report["comparison"] = comparison(report, config)
    finally:
        restore = {"latency_ms": saved_faults["latency_ms"], "jitter_ms": saved_faults["jitter_ms"]}
        admin.set_faults(**restore)
        admin.close()
    return report


def _warm_up(approach: Approach, *, cards: int) -> None:
    """Open connections and fill caches before the clock starts (not measured, not counted)."""
    for _ in range(cards):
        try:
            approach.detokenize(approach.create().external_ref_id)
        except Exception:  # noqa: BLE001 - the measured run reports errors by code
            return


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def approach_report(phase: PhaseResult, tome: TomeStats) -> dict[str, Any]:
    created = phase.created
    fill_calls = sum(n for (_, op), n in tome.calls.items() if op in ("generate", "tokenize"))
    generated = sum(n for (_, op), n in tome.items.items() if op == "generate")
    return {
        "cards": phase.cards,
        "errors": phase.error_count,
        "duplicates": phase.duplicates,
        "tome_calls": tome.total,
        "tome_calls_per_card": _rounded(calls_per_card(calls=tome.total, cards=created), 4),
        "latency_ms": {"create": summary_ms(phase.create), "detokenize": summary_ms(phase.detokenize)},
        # Beyond the contract's shape:
        "cards_created": created,
        "cards_detokenized": phase.detokenized,
        "errors_by_code": dict(phase.errors),
        "sources": dict(phase.sources),
        "rate_per_second": round(phase.rate, 4),
        "duration_seconds": phase.duration,
        "elapsed_seconds": round(phase.elapsed, 3),
        "tome_calls_by_operation": tome.by_operation(),
        "tome_errors": sum(tome.errors.values()),
        "tome_pairs_generated": generated,
        "tome_fill_calls": fill_calls,
        "client": {"workers": phase.workers, "busy_peak": phase.busy_peak,
                   "start_lag_ms": summary_ms(phase.start_lag), "fell_behind": phase.client_fell_behind},
        "timeline": [window.as_dict(second) for second, window in sorted(phase.windows.items())],
        "distribution_ms": {op: _spectrum(h) for op, h in (("create", phase.create),
                                                             ("detokenize", phase.detokenize))},
    }


def _spectrum(histogram: Any) -> list[list[float]]:
    """(percentile, ms) points for the distribution chart."""
    if histogram.get_total_count() == 0:
        return []
    points = [0, 10, 25, 50, 75, 90, 95, 97.5, 99, 99.5, 99.9, 100]
    return [[p, round(histogram.get_value_at_percentile(p) / 1000, 3)] for p in points]


def _broken_because(phase: PhaseResult, rate: float) -> str:
    """Why a find-max step at ``rate`` broke (errors first, else its p99)."""
    if phase.error_count:
        reason = f"errors at {rate:.1f} cards/s: {dict(phase.errors)}"
    else:
        reason = f"p99 ≥ {P99_LIMIT_MS:g} ms at {rate:.1f} cards/s"
    if phase.client_fell_behind:
        reason += " (the load generator also fell behind: a lower bound)"
    return reason


def _bracket(step: Callable[[float], bool], config: LoadtestConfig) -> tuple[float | None, float | None]:
    """The last good and the first bad rate: doubling from the start rate, or halving while even the
    start rate breaks (down to half the plan's rate)."""
    good: float | None = None
    bad: float | None = None
    rate = config.find_max_start
    while rate <= config.find_max_limit:
        if not step(rate):
            bad = rate
            break
        good, rate = rate, rate * 2
    # Broken at the start rate: halve down to half the plan's rate, so "not even at 50K/day" is measured too.
    rate = config.find_max_start / 2
    while good is None and rate >= PLAN_RATE / 2:
        if step(rate):
            good = rate
        else:
            bad, rate = rate, rate / 2
    return good, bad


def _refine(step: Callable[[float], bool], good: float | None, bad: float | None, *,
            steps: int) -> tuple[float | None, float | None]:
    """Bisect ``steps`` times between the last good and the first bad rate (when there are both)."""
    if good is None or bad is None:
        return good, bad
    for _ in range(steps):
        middle = (good + bad) / 2
        if step(middle):
            good = middle
        else:
            bad = middle
    return good, bad


def find_max(approach: Approach, config: LoadtestConfig, *, log: Callable[[str], None]) -> dict[str, Any]:
    """Double the rate from ``find_max_start`` until p99 ≥ 50 ms or errors (or halve it while even
    the start rate breaks); then bisect ``refine_steps`` times between the last good and the first
    bad rate."""
    steps: list[dict[str, Any]] = []
    stopped = f"reached the --find-max-limit of {config.find_max_limit:g} cards/s"

    def step(rate: float) -> bool:
        nonlocal stopped
        # At least MIN_STEP_CARDS cards, so a slow step's p99 is not one unlucky card out of three.
        duration = max(config.step_seconds, MIN_STEP_CARDS / rate)
        phase = run_phase(approach=approach, rate=rate, duration=duration, workers=config.workers,
                          progress=config.progress, label=f"{approach.name} find-max {rate:.1f}/s")
        create, detokenize = summary_ms(phase.create), summary_ms(phase.detokenize)
        # The client's own lag is inside the latencies (measured from the schedule), so a step under
        # 50 ms is good whatever the lag; a broken step with a lagging client is only a lower bound.
        ok = phase.error_count == 0 and phase.p99_ms() < P99_LIMIT_MS
        steps.append({"rate": round(rate, 3), "seconds": round(duration, 1), "cards": phase.cards,
                      "errors": phase.error_count, "duplicates": phase.duplicates,
                      "errors_by_code": dict(phase.errors), "create_ms": create, "detokenize_ms": detokenize,
                      "client_fell_behind": phase.client_fell_behind,
                      "client_start_lag_p99_ms": summary_ms(phase.start_lag)["p99"], "ok": ok})
        behind = " (client fell behind)" if phase.client_fell_behind else ""
        log(f"{approach.name} find-max {rate:8.2f}/s: create p99 {create['p99']} ms, detokenize p99 "
            f"{detokenize['p99']} ms, errors {phase.error_count}{behind} -> {'ok' if ok else 'broken'}")
        if not ok:
            stopped = _broken_because(phase, rate)
        return ok

    good, bad = _bracket(step, config)
    reason = stopped  # what ended the search; the bisection's broken steps do not replace it
    good, bad = _refine(step, good, bad, steps=config.refine_steps)
    return {"steps": steps, "max_rate": round(good, 3) if good is not None else None,
            "first_broken_rate": round(bad, 3) if bad is not None else None,
            "headroom": round(good / PLAN_RATE, 1) if good is not None else None,
            "stopped_because": reason, "step_seconds": config.step_seconds,
            "criterion": f"create and detokenize p99 < {P99_LIMIT_MS:g} ms (from the schedule), no errors"}


def comparison(report: dict[str, Any], config: LoadtestConfig) -> dict[str, Any]:
    """TOME calls per day at 50K cards/day, measured, next to the plan; and the headroom."""
    rows: dict[str, Any] = {}
    for name, data in report["approaches"].items():
        created = data["cards_created"]
        row: dict[str, Any] = {"plan_tome_calls_per_day": PLAN_TOME_CALLS_PER_DAY[name],
                               "plan_wording": PLAN_WORDING[name]}
        if not created:
            rows[name] = {**row, "measured_tome_calls_per_day": None, "note": "no card was created"}
            continue
        if name == "library":
            per_card = calls_per_card(calls=data["tome_calls"], cards=created) or 0.0
            # The admin dashboard's live-path figure is the same definition (monitoring/numbers.py).
            row.update(measured_tome_calls_per_day=round(per_card * PLAN_CARDS_PER_DAY),
                       tome_calls_per_card=round(per_card, 4),
                       dashboard_live_calls_per_card=LIVE_CALLS_PER_CARD, dashboard_live_basis=LIVE_CALLS_BASIS,
                       basis="every call is on the card's path: measured calls per card × 50,000")
        else:
            request_path = (data["tome_calls"] - data["tome_fill_calls"]) / created
            if data["tome_pairs_generated"]:
                per_pair = data["tome_fill_calls"] / data["tome_pairs_generated"]
                basis = (f"refill measured in this run: {data['tome_fill_calls']} generate/tokenize calls for "
                         f"{data['tome_pairs_generated']} pairs")
            elif config.refill_batch_size:
                per_pair = 2 / config.refill_batch_size
                basis = (f"no refill ran during the run; a refill makes 1 NS1 generate + 1 NS2 tokenize per "
                         f"batch of {config.refill_batch_size} pairs (the pool's batch size)")
            else:
                per_pair, basis = 0.0, "no refill ran during the run and the pool's batch size is unknown"
            row.update(measured_tome_calls_per_day=round((request_path + per_pair) * PLAN_CARDS_PER_DAY),
                       request_path_calls_per_card=round(request_path, 4),
                       refill_calls_per_pair=round(per_pair, 6),
                       tome_calls_per_card=round(request_path + per_pair, 6),
                       basis=f"request-path calls per card × 50,000 + refill calls amortised ({basis})")
        rows[name] = row
    headroom = {name: {"max_rate": data["max_rate"], "headroom": data["headroom"],
                       "stopped_because": data["stopped_because"]}
                for name, data in report.get("find_max", {}).items()}
    return {"cards_per_day": PLAN_CARDS_PER_DAY, "plan_rate_per_second": round(PLAN_RATE, 4),
            "tome_calls_per_day": rows, "headroom": headroom,
            "headroom_definition": f"highest sustained rate with p99 < {P99_LIMIT_MS:g} ms ÷ "
                                   f"{PLAN_RATE:.2f} cards/s (--find-max)"}


def _cross_duplicates(phases: dict[str, PhaseResult]) -> int:
    """Pairs handed to one approach whose tokens another approach also received (they share TOME)."""
    names = list(phases)
    count = 0
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            a, b = phases[first], phases[second]
            count += len(a.internal_tokens & b.internal_tokens) + len(a.external_ref_ids & b.external_ref_ids)
    return count


def _config_dict(config: LoadtestConfig) -> dict[str, Any]:
    data = asdict(config)
    for secret in ("api_key", "tome_token", "tome_admin_token"):
        data.pop(secret)
    data["rate_per_second"] = round(config.rate, 4)
    data["expected_cards"] = max(1, round(config.rate * config.duration))
    if math.isinf(data["find_max_limit"]):
        data["find_max_limit"] = None
    return data
