"""refill_run: fills in committed batches, single flight, honest outcomes on every path."""
from __future__ import annotations

import re
import time

import pytest
from django.db import connections

from pool.models import PairStatus, TokenPair
from refill.models import RefillLease, RefillOutcome, RefillRun, RefillTrigger
from refill.services import REFILL_LOCK_CLASS, pool_refill_locked, refill_run

pytestmark = pytest.mark.django_db

INTERNAL = re.compile(r"^\d{16}$")
EXTERNAL = re.compile(r"^ext_[a-z2-7]{26}$")


def available(pool) -> int:
    return TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).count()


def assert_whole_pairs(pool) -> None:
    rows = list(TokenPair.objects.filter(pool=pool)
                .values_list("internal_token", "external_ref_id", "status", "source"))
    assert all(INTERNAL.match(i) and EXTERNAL.match(e) for i, e, _, _ in rows)
    assert {(s, src) for _, _, s, src in rows} <= {("AVAILABLE", "pool")}
    assert len({i for i, *_ in rows}) == len({e for _, e, *_ in rows}) == len(rows)


def test_fills_a_pool_to_target_in_tome_batches(refill_ready, make_pool):
    pool = make_pool(target_size=450, batch_size=100)
    run = refill_run(pool=pool, trigger=RefillTrigger.MANUAL)
    assert run.outcome == RefillOutcome.SUCCEEDED, run.error
    assert (run.requested, run.inserted) == (450, 450)
    assert available(pool) == 450
    assert_whole_pairs(pool)
    # 5 batches (4 × 100 + 50), each one NS1 generate + one NS2 tokenize, counted per HTTP call.
    assert run.tome_calls == 10 == refill_ready.calls("ns1", "generate") + refill_ready.calls("ns2", "tokenize")
    assert run.tome_seconds > 0 and run.db_seconds > 0
    assert run.finished_at >= run.started_at
    assert not RefillLease.objects.filter(pool=pool).exists()  # released: the next trigger may enqueue


def test_a_pool_is_filled_from_its_own_namespaces(refill_ready, make_pool):
    admin = refill_ready.admin
    for name, fmt in (("prod-internal", {"format": "numeric16"}),
                      ("prod-external", {"format": "prefixed", "prefix": "ext_"})):
        assert admin.put(f"/v1/admin/namespaces/{name}", json=fmt).status_code in (200, 201)
    pool = make_pool(target_size=120, batch_size=100, ns1_namespace="prod-internal",
                     ns2_namespace="prod-external")
    run = refill_run(pool=pool, trigger=RefillTrigger.MANUAL)
    assert run.outcome == RefillOutcome.SUCCEEDED, run.error
    assert refill_ready.calls("prod-internal", "generate") == 2
    assert refill_ready.calls("prod-external", "tokenize") == 2
    assert refill_ready.calls("ns1", "generate") == refill_ready.calls("ns2", "tokenize") == 0


def test_tops_up_only_the_shortfall_and_then_has_nothing_to_do(refill_ready, make_pool):
    pool = make_pool(target_size=300, batch_size=100)
    refill_run(pool=pool, trigger=RefillTrigger.MANUAL, count=120)
    run = refill_run(pool=pool, trigger=RefillTrigger.SCHEDULED)
    assert (run.outcome, run.requested, run.inserted) == (RefillOutcome.SUCCEEDED, 180, 180)
    again = refill_run(pool=pool, trigger=RefillTrigger.SCHEDULED)
    assert (again.outcome, again.requested, again.inserted, again.tome_calls) == (RefillOutcome.NOTHING_TO_DO, 0, 0, 0)
    assert available(pool) == 300


def test_readiness_gate_blocks_and_names_missing_approvals(tome, onboarding_plan, make_pool):
    pool = make_pool()
    run = refill_run(pool=pool, trigger=RefillTrigger.SCHEDULED)
    assert run.outcome == RefillOutcome.BLOCKED_ONBOARDING
    from onboarding.readiness import missing_approvals

    missing = missing_approvals(environment="UAT")
    assert missing and all(title in run.error for title in missing)
    assert run.finished_at is not None
    assert TokenPair.objects.filter(pool=pool).count() == 0
    assert tome.calls("ns1", "generate") == 0


def test_readiness_gate_passes_once_approved(tome, approve_onboarding, make_pool):
    pool = make_pool(target_size=200)
    assert refill_run(pool=pool, trigger=RefillTrigger.SCHEDULED).outcome == RefillOutcome.BLOCKED_ONBOARDING
    approve_onboarding("UAT")
    run = refill_run(pool=pool, trigger=RefillTrigger.SCHEDULED)
    assert run.outcome == RefillOutcome.SUCCEEDED, run.error
    assert available(pool) == 200


def test_production_pool_stays_blocked_while_only_uat_is_approved(refill_ready, make_pool):
    pool = make_pool(environment="PRODUCTION")
    run = refill_run(pool=pool, trigger=RefillTrigger.SCHEDULED)
    assert run.outcome == RefillOutcome.BLOCKED_ONBOARDING
    assert "PRODUCTION" in run.error


def test_lock_held_elsewhere_means_skipped_locked(refill_ready, make_pool):
    pool = make_pool()
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", [REFILL_LOCK_CLASS, pool.pk])
        assert pool_refill_locked(pool_id=pool.pk)
        run = refill_run(pool=pool, trigger=RefillTrigger.SCHEDULED)
    finally:
        # Unlock before closing: the server drops a closed session's locks only once its backend
        # has exited, which a loaded machine may not have done by the check below.
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock_all()")
        other.close()
    assert run.outcome == RefillOutcome.SKIPPED_LOCKED
    assert run.inserted == 0 and TokenPair.objects.filter(pool=pool).count() == 0
    assert not pool_refill_locked(pool_id=pool.pk)


def test_lock_is_released_on_every_path(refill_ready, make_pool, monkeypatch):
    pool = make_pool(target_size=200)
    import pool.services as pool_services

    def broken_insert(**kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pool_services, "pairs_insert_bulk", broken_insert)
    with pytest.raises(RuntimeError):
        refill_run(pool=pool, trigger=RefillTrigger.MANUAL)
    run = RefillRun.objects.get(pool=pool)
    assert run.outcome == RefillOutcome.FAILED and "disk on fire" in run.error
    assert not pool_refill_locked(pool_id=pool.pk)


def test_a_stale_running_row_is_closed_by_the_next_run(refill_ready, make_pool):
    pool = make_pool(target_size=200)
    stale = RefillRun.objects.create(pool=pool, trigger=RefillTrigger.SCHEDULED, requested=500, inserted=100)
    run = refill_run(pool=pool, trigger=RefillTrigger.SCHEDULED)
    stale.refresh_from_db()
    assert stale.outcome == RefillOutcome.FAILED and "Abandoned" in stale.error and stale.finished_at
    assert run.outcome == RefillOutcome.SUCCEEDED


def test_upstream_failure_mid_run_ends_failed_and_keeps_committed_batches(refill_ready, make_pool, monkeypatch):
    pool = make_pool(target_size=500, batch_size=100)
    import pool.services as pool_services

    real_insert = pool_services.pairs_insert_bulk
    batches = []

    def insert_then_break_tome(*, pool, pairs):
        inserted = real_insert(pool=pool, pairs=pairs)
        batches.append(inserted)
        if len(batches) == 2:
            refill_ready.set_faults(error_rate=1.0, error_status=503)
        return inserted

    monkeypatch.setattr(pool_services, "pairs_insert_bulk", insert_then_break_tome)
    started = time.monotonic()
    run = refill_run(pool=pool, trigger=RefillTrigger.SCHEDULED)
    assert time.monotonic() - started < 20
    assert run.outcome == RefillOutcome.FAILED
    assert "Batch 3" in run.error and "200 of 500" in run.error
    assert (run.requested, run.inserted) == (500, 200)
    assert TokenPair.objects.filter(pool=pool).count() == 200  # both committed batches, nothing else
    assert_whole_pairs(pool)
    # the failed batch was tried REFILL_BATCH_ATTEMPTS (3) times before the run gave up
    assert refill_ready.calls("ns1", "generate", "error") == 3
    lease = RefillLease.objects.get(pool=pool)
    assert lease.state == "cooldown"  # on-demand triggers back off instead of hammering TOME
    assert not pool_refill_locked(pool_id=pool.pk)


def test_outage_fails_the_run_and_the_open_breaker_fails_the_next_one_fast(refill_ready, make_pool, settings):
    pool = make_pool(target_size=200)
    refill_ready.set_faults(outage=True)
    first = refill_run(pool=pool, trigger=RefillTrigger.SCHEDULED)
    assert first.outcome == RefillOutcome.FAILED and first.inserted == 0
    from tome.provider import get_tome_client

    client = get_tome_client()
    while client.breaker_state != "open":  # make sure it is open whatever the thresholds
        refill_run(pool=pool, trigger=RefillTrigger.SCHEDULED)
    before = refill_ready.calls("ns1", "generate", "error")
    started = time.monotonic()
    run = refill_run(pool=pool, trigger=RefillTrigger.SCHEDULED)
    assert time.monotonic() - started < 1.0
    assert run.outcome == RefillOutcome.FAILED and "circuit breaker is open" in run.error
    assert refill_ready.calls("ns1", "generate", "error") == before  # no network call at all
    assert TokenPair.objects.filter(pool=pool).count() == 0


def test_time_budget_ends_the_run_partial_on_a_batch_boundary(refill_ready, make_pool):
    pool = make_pool(target_size=1000, batch_size=50)
    refill_ready.set_faults(latency_ms=100)
    run = refill_run(pool=pool, trigger=RefillTrigger.SCHEDULED, time_budget_seconds=0.5)
    assert run.outcome == RefillOutcome.PARTIAL, run.error
    assert 0 < run.inserted < 1000 and run.inserted % 50 == 0
    assert TokenPair.objects.filter(pool=pool).count() == run.inserted
    assert "Time budget" in run.error


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_workers_never_overfill(refill_ready, make_pool, run_concurrently):
    pool = make_pool(target_size=600, batch_size=100)
    refill_ready.set_faults(latency_ms=50)  # long enough for the two runs to overlap
    runs = run_concurrently(lambda: refill_run(pool=pool, trigger=RefillTrigger.SCHEDULED), threads=2)
    outcomes = sorted(r.outcome for r in runs)
    assert outcomes in (sorted([RefillOutcome.SUCCEEDED, RefillOutcome.SKIPPED_LOCKED]),
                        sorted([RefillOutcome.SUCCEEDED, RefillOutcome.NOTHING_TO_DO]))
    assert sum(r.inserted for r in runs) == 600
    assert available(pool) == 600  # exactly the target: no over-fill at all
    assert not pool_refill_locked(pool_id=pool.pk)
