"""A seconds-long smoke of ``manage.py loadtest --approach both`` against a live TokenPool
(pytest-django's ``live_server``) and the TOME emulator, checked by the emulator's own counters.
The real measurements are made by ``make bench`` and recorded in docs/benchmarks.md."""
from __future__ import annotations

import io
import json
import logging
import secrets
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

RATE = 8  # cards/s: 24 cards per approach in 3 s


@pytest.fixture
def served(transactional_db: None, live_server: Any, tome: Any) -> dict[str, Any]:
    from keys.models import ApiKey
    from pool.models import Pool
    from pool.services import pairs_insert_bulk
    from tests.fixtures.pool import fake_pairs

    pool = Pool.objects.create(name=f"loadtest-{secrets.token_hex(3)}", refill_enabled=False, batch_size=500)
    pairs_insert_bulk(pool=pool, pairs=fake_pairs(60))
    _, raw_key = ApiKey.objects.create_key(name=f"loadtest-{secrets.token_hex(3)}", scopes=["reserve", "detokenize"])
    return {"pool": pool, "url": live_server.url, "key": raw_key, "tome": tome}


def run_loadtest(served: dict[str, Any], *, approach: str, seconds: int, stdout: Any,
                 extra: tuple[str, ...] = ()) -> None:
    """``manage.py loadtest`` against ``served`` at RATE cards/s for ``seconds`` (5 ms injected TOME latency)."""
    tome = served["tome"]
    call_command("loadtest", "--base-url", served["url"], "--api-key", served["key"], "--approach", approach,
                 "--cards-per-day", str(RATE * 86_400), "--speedup", "1", "--duration", str(seconds),
                 "--pool", served["pool"].name, "--tome-url", tome.base_url, "--tome-token", tome.client_token,
                 "--tome-admin-token", tome.admin_token, "--tome-latency-ms", "5", "--timeout", "30",
                 "--no-progress", *extra, stdout=stdout)


def test_loadtest_both_approaches_writes_the_contract_json(served: dict[str, Any], tmp_path: Path,
                                                           capfd: pytest.CaptureFixture[str]) -> None:
    tome = served["tome"]
    tome.set_faults(latency_ms=1)
    out, report, table = tmp_path / "loadtest.json", tmp_path / "loadtest.html", io.StringIO()
    run_loadtest(served, approach="both", seconds=3, stdout=table, extra=("--json", str(out), "--report", str(report)))
    data = json.loads(out.read_text())

    assert set(data["approaches"]) == {"pool", "library"}
    for name, result in data["approaches"].items():
        assert {"cards", "errors", "duplicates", "tome_calls", "tome_calls_per_card", "latency_ms"} <= set(result)
        assert set(result["latency_ms"]) == {"create", "detokenize"}
        for op in ("create", "detokenize"):
            assert set(result["latency_ms"][op]) == {"p50", "p95", "p99", "max"}
            cut = result["latency_ms"][op]
            assert 0 < cut["p50"] <= cut["p99"] <= cut["max"]
        assert result["cards"] == result["cards_created"] == result["cards_detokenized"] == 3 * RATE, name
        assert result["errors"] == 0 and result["errors_by_code"] == {}, name
        assert result["duplicates"] == 0, name
    assert data["duplicates_across_approaches"] == 0

    pool, library = data["approaches"]["pool"], data["approaches"]["library"]
    # The library pays NS1 + NS2 tokenize per card and one NS2 detokenize; the emulator counted them.
    assert library["tome_calls"] == 3 * library["cards_created"]
    assert library["tome_calls_by_operation"] == {"ns1 tokenize": 3 * RATE, "ns2 detokenize": 3 * RATE,
                                                  "ns2 tokenize": 3 * RATE}
    # Prefetched pairs, refill off: no TOME call at all on the card's path.
    assert pool["tome_calls"] == 0 and pool["sources"] == {"pool": 3 * RATE}
    # Latency from the scheduled start includes the injected TOME latency twice for the library.
    assert library["latency_ms"]["create"]["p50"] >= 10

    comparison = data["comparison"]["tome_calls_per_day"]
    assert comparison["library"]["measured_tome_calls_per_day"] == 150_000
    assert comparison["pool"]["measured_tome_calls_per_day"] == 200  # 2 calls per 500-pair refill batch
    assert comparison["library"]["plan_tome_calls_per_day"] == 200_000
    # One definition: what the library measured is what the admin dashboard counts for the live path.
    from monitoring.numbers import LIVE_CALLS_PER_CARD

    assert comparison["library"]["tome_calls_per_card"] == comparison["library"]["dashboard_live_calls_per_card"]
    assert comparison["library"]["dashboard_live_calls_per_card"] == LIVE_CALLS_PER_CARD
    # The injected latency was set for the run and put back afterwards.
    assert data["tome"]["latency_ms"] == 5 and tome.faults()["latency_ms"] == 1
    lines = table.getvalue().splitlines()
    assert any(line.startswith("pool ") for line in lines) and any(line.startswith("library ") for line in lines)
    assert "The plan's comparison at 50,000 cards/day" in table.getvalue()
    page = report.read_text()
    # Self-contained: the charts are inline SVG, nothing is fetched.
    assert page.count("<svg") >= 5
    assert "<script src" not in page and "<link" not in page and "@import" not in page
    assert "--api-key $KEY" in page and served["key"] not in page
    # The verdict opens the page and the table; per-call logs only with -v 2.
    assert page.index("id='verdict'") < page.index("<svg") and "PASS" in page.split("<svg")[0]
    assert lines[0].split()[0] in {"PASS", "FAIL"} and "TOME calls per card" in table.getvalue().split("loadtest:")[0]
    captured = capfd.readouterr()
    assert '"tome_call"' not in captured.out + captured.err
    # ... and only for the run: the process's loggers are as they were.
    assert logging.getLogger("tokenpool.tome").level == logging.NOTSET


def test_loadtest_buffered_approach_creates_and_detokenizes_every_card(served: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "loadtest.json"
    run_loadtest(served, approach="buffered", seconds=3, stdout=io.StringIO(), extra=("--json", str(out)))
    result = json.loads(out.read_text())["approaches"]["buffered"]
    assert result["cards"] == result["cards_detokenized"] == 3 * RATE
    assert result["errors"] == 0 and result["duplicates"] == 0
