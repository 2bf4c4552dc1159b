"""The load-test verdict (contract section 6 --report): PASS/FAIL per goal with the numbers."""
from __future__ import annotations

from typing import Any

from loadtest.report import html_report, text_table
from loadtest.verdict import verdicts


def _report(*, pool_p99: float, pool_per_card: float, library_per_card: float | None,
            errors: int = 0) -> dict[str, Any]:
    def approach(p99: float, per_card: float | None, errs: int) -> dict[str, Any]:
        cut = {"p50": p99 / 4, "p95": p99 / 2, "p99": p99, "max": p99 * 2}
        return {"cards": 100, "errors": errs, "duplicates": 0, "tome_calls": 0, "tome_calls_per_card": per_card,
                "errors_by_code": {}, "sources": {}, "tome_calls_by_operation": {},
                "client": {"fell_behind": False, "start_lag_ms": {"p99": 1.0}, "busy_peak": 1, "workers": 8},
                "latency_ms": {"create": cut, "detokenize": cut}, "timeline": [], "distribution_ms":
                {"create": [[50, p99 / 4], [99, p99]], "detokenize": [[50, p99 / 4], [99, p99]]}}
    approaches = {"pool": approach(pool_p99, pool_per_card, errors)}
    if library_per_card is not None:
        approaches["library"] = approach(30.0, library_per_card, 0)
    return {"config": {"cards_per_day": 50_000, "speedup": 1, "rate_per_second": 0.5787, "duration": 60},
            "tome": {}, "approaches": approaches, "duplicates_across_approaches": 0}


def test_both_goals_pass_with_their_numbers():
    report = _report(pool_p99=12.3, pool_per_card=0.004, library_per_card=3.0)
    got = verdicts(report)
    assert [v["status"] for v in got] == ["PASS", "PASS"]
    assert "p99 12.3 ms" in got[0]["detail"] and "99.9% fewer" in got[1]["detail"]
    assert text_table(report).splitlines()[0].startswith("PASS")
    page = html_report(report)
    assert page.index("id='verdict'") < page.index("<svg") and "data-verdict='PASS'" in page
    assert "load average" in page
    # The results as a real table: one row per approach, the p99 in its own cell.
    results = page.split("<table id='results'")[1].split("</table>")[0]
    assert results.count("<tr><td>") == 2 and "<td>12.3</td>" in results


def test_slow_or_erroring_pool_and_a_small_reduction_fail():
    assert [v["status"] for v in verdicts(_report(pool_p99=75.0, pool_per_card=2.0, library_per_card=3.0))] == \
        ["FAIL", "FAIL"]
    assert verdicts(_report(pool_p99=10.0, pool_per_card=0.0, library_per_card=3.0, errors=2))[0]["status"] == "FAIL"
    only_pool = verdicts(_report(pool_p99=10.0, pool_per_card=0.0, library_per_card=None))
    assert only_pool[1]["status"] == "NOT MEASURED"
    assert "data-verdict='FAIL'" in html_report(_report(pool_p99=10.0, pool_per_card=0.0, library_per_card=None))
