"""/metrics (contract section 3): families, label sets, values equal to the database, and one
scrape summing every process that writes into the multiprocess directory."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from monitoring.metrics import record_tome_call
from pool.models import PairSource, PairStatus, TokenPair
from refill.models import RefillOutcome, RefillRun, RefillTrigger
from tests.fixtures.monitoring import sample_value, samples
from tests.fixtures.processes import ROOT
from tokenpool_tome.client import CallRecord

pytestmark = pytest.mark.django_db


def _call(namespace: str, operation: str = "generate", outcome: str = "ok", status: int | None = 200) -> CallRecord:
    return CallRecord(namespace=namespace, operation=operation, batch_size=10, attempt=1, latency_seconds=0.012,
                      outcome=outcome, status_code=status, error=None if outcome == "ok" else "503 unavailable")


def _finished_run(pool, outcome: str) -> RefillRun:
    return RefillRun.objects.create(pool=pool, trigger=RefillTrigger.SCHEDULED, outcome=outcome,
                                    finished_at=timezone.now())


def test_metrics_is_prometheus_text_without_api_key(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE tokenpool_pool_pairs gauge" in response.content.decode()
    assert client.post("/metrics").status_code == 405


def test_pool_pairs_and_reservations_equal_the_database(make_pool, pair_states, scrape):
    pool = make_pool(pairs=30)
    pair_states(pool, reserved=4, used=7, retired=2, direct=3)
    text = scrape()

    for status in PairStatus:
        expected = TokenPair.objects.filter(pool=pool, status=status).count()
        assert sample_value(text, "tokenpool_pool_pairs", {"pool": pool.name, "status": status.value}) == expected
    assert sample_value(text, "tokenpool_pool_pairs", {"pool": pool.name, "status": "AVAILABLE"}) == 17
    assert sample_value(text, "tokenpool_pool_pairs", {"pool": pool.name, "status": "RESERVED"}) == 7
    # Every pair handed out, by origin: 13 from the pool, 3 made live by the direct fallback.
    assert sample_value(text, "tokenpool_reservations_total", {"pool": pool.name, "source": "pool"}) == 13
    assert sample_value(text, "tokenpool_reservations_total", {"pool": pool.name, "source": "direct"}) == 3
    assert "# TYPE tokenpool_reservations_total counter" in text


def test_label_sets_match_the_contract(make_pool, scrape, client):
    pool = make_pool(pairs=1)
    namespace = f"ns-{secrets.token_hex(3)}"
    record_tome_call(_call(namespace))
    _finished_run(pool, RefillOutcome.SUCCEEDED)
    client.get("/healthz")
    text = scrape()

    def label_names(name: str) -> set[frozenset[str]]:
        return {frozenset(labels) for labels, _ in samples(text, name)}

    assert label_names("tokenpool_pool_pairs") == {frozenset({"pool", "status"})}
    assert label_names("tokenpool_reservations_total") == {frozenset({"pool", "source"})}
    assert label_names("tokenpool_tome_calls_total") == {frozenset({"namespace", "operation", "outcome"})}
    assert label_names("tokenpool_refill_runs_total") == {frozenset({"pool", "outcome"})}
    assert {"endpoint", "le"} <= set().union(*label_names("tokenpool_request_duration_seconds_bucket"))
    statuses = {labels["status"] for labels, _ in samples(text, "tokenpool_pool_pairs") if labels["pool"] == pool.name}
    assert statuses == {"AVAILABLE", "RESERVED", "USED", "RETIRED"}
    sources = {labels["source"] for labels, _ in samples(text, "tokenpool_reservations_total")
               if labels["pool"] == pool.name}
    assert sources == {"pool", "direct"}


def test_refill_runs_counted_by_outcome_and_running_ones_left_out(make_pool, scrape):
    pool = make_pool(pairs=1)
    for outcome in (RefillOutcome.SUCCEEDED, RefillOutcome.SUCCEEDED, RefillOutcome.FAILED):
        _finished_run(pool, outcome)
    RefillRun.objects.create(pool=pool, trigger=RefillTrigger.MANUAL)  # still running
    text = scrape()
    assert sample_value(text, "tokenpool_refill_runs_total", {"pool": pool.name, "outcome": "succeeded"}) == 2
    assert sample_value(text, "tokenpool_refill_runs_total", {"pool": pool.name, "outcome": "failed"}) == 1
    assert sample_value(text, "tokenpool_refill_runs_total", {"pool": pool.name, "outcome": "partial"}) == 0
    assert sample_value(text, "tokenpool_refill_runs_total", {"pool": pool.name, "outcome": "running"}) is None


def test_tome_calls_counted_per_attempt_by_outcome(scrape):
    namespace = f"ns-{secrets.token_hex(3)}"
    for _ in range(3):
        record_tome_call(_call(namespace, "tokenize"))
    record_tome_call(_call(namespace, "tokenize", outcome="error", status=503))
    record_tome_call(_call(namespace, "tokenize", outcome="error", status=None))  # a timeout, retried
    text = scrape()
    labels = {"namespace": namespace, "operation": "tokenize"}
    assert sample_value(text, "tokenpool_tome_calls_total", {**labels, "outcome": "ok"}) == 3
    assert sample_value(text, "tokenpool_tome_calls_total", {**labels, "outcome": "error"}) == 2
    assert sample_value(text, "tokenpool_tome_call_duration_seconds_count", labels) == 5


def test_request_duration_is_labelled_by_route_not_raw_path(api, scrape):
    raw_ids = [secrets.token_hex(8) for _ in range(2)]
    for raw_id in raw_ids:
        api.get(f"/api/v1/reservations/{raw_id}")  # 404s, each with a different raw path
    text = scrape()
    route = "/api/v1/reservations/<str:reservation_id>"
    assert sample_value(text, "tokenpool_request_duration_seconds_count", {"endpoint": route, "method": "GET"}) >= 2
    endpoints = {labels["endpoint"] for labels, _ in samples(text, "tokenpool_request_duration_seconds_count")}
    assert not any(raw_id in endpoint for raw_id in raw_ids for endpoint in endpoints)


def test_request_duration_method_label_is_a_standard_method_or_other(client, scrape):
    route = "/api/v1/reservations/<str:reservation_id>"
    odd_methods = ["PROPFIND", f"X{secrets.token_hex(6).upper()}"]

    def count(method: str) -> float:
        return sample_value(scrape(), "tokenpool_request_duration_seconds_count",
                            {"endpoint": route, "method": method}) or 0

    other_before, get_before = count("other"), count("GET")
    for method in odd_methods:
        client.generic(method, "/api/v1/reservations/some-id")
    client.get("/api/v1/reservations/some-id")
    assert count("other") == other_before + 2
    assert count("GET") == get_before + 1
    methods = {labels["method"] for labels, _ in samples(scrape(), "tokenpool_request_duration_seconds_count")}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "other"}
    assert not methods & set(odd_methods)


def test_counters_written_by_another_process_are_summed(scrape):
    """A separate OS process (as a gunicorn worker or the qcluster would be) increments the same
    counter in the shared directory; one scrape answers the total."""
    namespace = f"ns-{secrets.token_hex(3)}"
    for _ in range(2):
        record_tome_call(_call(namespace, "detokenize"))
    child = (
        "from monitoring.metrics import record_tome_call\n"
        "from tokenpool_tome.client import CallRecord\n"
        f"for _ in range(5): record_tome_call(CallRecord(namespace={namespace!r}, operation='detokenize', "
        "batch_size=1, attempt=1, latency_seconds=0.01, outcome='ok', status_code=200, error=None))\n"
        "import os; print(os.getpid())\n"
    )
    env = dict(os.environ)  # carries PROMETHEUS_MULTIPROC_DIR of this test run
    out = subprocess.run([sys.executable, "-c", child], cwd=ROOT, env=env, check=True, capture_output=True,
                         text=True, timeout=60)
    assert int(out.stdout.strip()) != os.getpid()
    text = scrape()
    assert sample_value(text, "tokenpool_tome_calls_total",
                        {"namespace": namespace, "operation": "detokenize", "outcome": "ok"}) == 7


def test_scrape_counts_come_from_the_counters_and_equal_a_fresh_count(make_pool, pair_states, scrape):
    """Every pair family is exact (the trigger-kept counters), after reservations, direct pairs and a
    refill's new rows; the scrape reads the counter table, never the pair table."""
    pool = make_pool(pairs=40)
    pair_states(pool, used=5, retired=1)
    pair_states(pool, reserved=3, used=4, direct=2)
    make_pool(pool.name, pairs=10)

    with CaptureQueriesContext(connection) as queries:
        text = scrape()
    exact = {s: TokenPair.objects.filter(pool=pool, status=s).count() for s in PairStatus}

    def value(name: str, **labels: str) -> float | None:
        return sample_value(text, name, {"pool": pool.name, **labels})

    assert value("tokenpool_pool_pairs", status="AVAILABLE") == exact[PairStatus.AVAILABLE] == 37
    assert value("tokenpool_pool_pairs", status="RESERVED") == exact[PairStatus.RESERVED] == 5
    assert value("tokenpool_pool_pairs", status="USED") == exact[PairStatus.USED] == 9
    assert value("tokenpool_pool_pairs", status="RETIRED") == exact[PairStatus.RETIRED] == 1
    assert value("tokenpool_reservations_total", source="pool") == TokenPair.objects.filter(
        pool=pool, source=PairSource.POOL).exclude(status=PairStatus.AVAILABLE).count() == 13
    assert value("tokenpool_reservations_total", source="direct") == 2
    scrape_sql = [q["sql"] for q in queries.captured_queries]
    assert scrape_sql and not any("core_tokenpair" in sql for sql in scrape_sql)


def test_database_collector_failure_still_serves_process_metrics(scrape, monkeypatch):
    from monitoring import selectors

    def broken():
        raise RuntimeError("database is down")

    monkeypatch.setattr(selectors, "metrics_snapshot", broken)
    text = scrape()
    assert sample_value(text, "tokenpool_database_up") == 0


def test_metric_files_are_named_by_host_and_pid():
    """Containers sharing the directory have separate pid namespaces: the pid alone could collide."""
    import socket

    record_tome_call(_call(f"ns-{secrets.token_hex(3)}"))
    names = os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert f"counter_{socket.gethostname()}-{os.getpid()}.db" in names or any(
        n.startswith("counter_") and n.endswith(f"-{os.getpid()}.db") for n in names)


def test_a_fresh_deployment_lists_every_contract_family(scrape, settings):
    text = scrape()
    for family in ("tokenpool_pool_pairs", "tokenpool_reservations_total", "tokenpool_tome_calls_total",
                   "tokenpool_request_duration_seconds_bucket", "tokenpool_refill_runs_total"):
        assert any(True for _ in samples(text, family)), family
    assert sample_value(text, "tokenpool_tome_calls_total",
                        {"namespace": settings.TOME_NS1, "operation": "lookup", "outcome": "error"}) is not None
