"""The load test's verdict (contract section 6 ``--report``): PASS or FAIL for each of the plan's goals,
with the numbers, and the machine the run was measured on."""
from __future__ import annotations

import html
import os
import platform
from typing import Any

P99_GOAL_MS = 50.0
REDUCTION_GOAL = 0.5  # TOME calls per card at least 50 % below the library approach's


def verdicts(report: dict[str, Any]) -> list[dict[str, Any]]:
    """[{goal, status: PASS | FAIL | NOT MEASURED, detail}] for the create p99 and the TOME reduction."""
    approaches = report["approaches"]
    rate = report["config"]["rate_per_second"]
    out = []
    pool = approaches.get("pool")
    p99 = pool["latency_ms"]["create"]["p99"] if pool else None
    out.append({
        "goal": f"pool create p99 under {P99_GOAL_MS:g} ms at {rate:.4f} cards/s",
        "status": "NOT MEASURED" if p99 is None else ("PASS" if p99 < P99_GOAL_MS and not pool["errors"] else "FAIL"),
        "detail": "no pool run" if p99 is None else
        f"p99 {p99:.1f} ms over {pool['cards']:,} cards, {pool['errors']} error(s)",
    })
    library = approaches.get("library")
    pool_per_card = pool["tome_calls_per_card"] if pool else None
    library_per_card = library["tome_calls_per_card"] if library else None
    if pool_per_card is None or not library_per_card:
        status, detail = "NOT MEASURED", "needs both the pool and the library approach (--approach both)"
    else:
        reduction = 1 - pool_per_card / library_per_card
        status = "PASS" if reduction >= REDUCTION_GOAL else "FAIL"
        detail = (f"pool {pool_per_card:.4f} vs library {library_per_card:.4f} TOME calls per card "
                  f"(counted by TOME): {reduction:.1%} fewer")
    out.append({"goal": f"TOME calls per card at least {REDUCTION_GOAL:.0%} below the library approach's",
                "status": status, "detail": detail})
    return out


def machine() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    load_text = "n/a" if load is None else " / ".join(f"{v:.2f}" for v in load)
    return (f"{platform.node()}: {os.cpu_count()} CPU(s), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}; load average (1 / 5 / 15 min) at the end of the run {load_text}")


def verdict_text(report: dict[str, Any]) -> str:
    return "\n".join(f"{v['status']:<12} {v['goal']}: {v['detail']}" for v in verdicts(report))


def verdict_html(report: dict[str, Any]) -> str:
    colours = {"PASS": "#1e7b34", "FAIL": "#b42318", "NOT MEASURED": "#6b7280"}
    rows = "".join(
        f"<tr><td class='verdict-status' style='color:{colours[v['status']]};font-weight:700'>{v['status']}</td>"
        f"<td>{html.escape(v['goal'])}</td><td>{html.escape(v['detail'])}</td></tr>" for v in verdicts(report))
    overall = "PASS" if all(v["status"] == "PASS" for v in verdicts(report)) else "FAIL"
    return (f"<section id='verdict' data-verdict='{overall}'><h2>Verdict: "
            f"<span style='color:{colours[overall]}'>{overall}</span></h2>"
            f"<table><thead><tr><th>result</th><th>goal (the plan)</th><th>measured</th></tr></thead>"
            f"<tbody>{rows}</tbody></table><p><small>Machine: {html.escape(machine())}</small></p></section>")
