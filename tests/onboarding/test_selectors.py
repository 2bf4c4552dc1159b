"""The summary page's numbers: blockers, waiting times, estimate totals, the 50K cards/day impact."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from onboarding.selectors import environment_summary, estimate_totals, tome_call_impact
from onboarding.services import task_start, task_submit

pytestmark = pytest.mark.django_db


def test_production_blockers_chain_back_to_uat(onboarding_plan):
    summary = environment_summary(environment="PRODUCTION")
    assert (summary["approved"], summary["total"]) == (0, 4)
    rows = {r.task.slug: r for r in summary["blocked_rows"]}
    validation = rows["tome-validation-production"]
    assert [t.slug for t in validation.blocked_by] == ["ns2-namespace-production", "tome-validation-uat"]
    # Actionable roots: the UAT namespace onboarding (under both branches), nothing already approved.
    assert [t.slug for t in validation.root_blockers] == ["ns2-namespace-uat"]
    assert [t.slug for t in rows["master-key-production"].root_blockers] == ["kms-onboarding-uat"]


def test_approved_prerequisites_stop_blocking(onboarding_plan, drive_to_approved):
    drive_to_approved(onboarding_plan["kms-onboarding-uat"])
    summary = environment_summary(environment="UAT")
    assert summary["approved"] == 1
    assert "master-key-uat" not in {r.task.slug for r in summary["blocked_rows"]}
    assert "tome-validation-uat" in {r.task.slug for r in summary["blocked_rows"]}


def test_days_waiting_counts_from_submission_and_flags_the_two_week_window(onboarding_plan, lead):
    task = task_submit(task=task_start(task=onboarding_plan["kms-onboarding-uat"], user=lead), user=lead)
    now = task.submitted_at + timedelta(days=15, hours=12)
    summary = environment_summary(environment="UAT", now=now)
    (row,) = summary["waiting_rows"]
    assert row.task == task and row.days_waiting == pytest.approx(15.5)
    assert row.days_waiting_display == "15.5"
    assert "over" in row.waiting_flag
    summary = environment_summary(environment="UAT", now=task.submitted_at + timedelta(days=1))
    assert summary["waiting_rows"][0].waiting_flag == ""
    assert environment_summary(environment="PRODUCTION", now=timezone.now())["common_rows"][0].days_waiting is None


def test_estimate_totals_per_approach(onboarding_plan, drive_to_approved):
    totals = {a["label"]: a for a in estimate_totals()}
    common = totals["Common (both environments)"]
    library = totals["Approach 1: JAR/library"]
    prefetch = totals["Approach 2: prefetch + DB"]
    assert (common["count"], common["days"]) == (8, Decimal("7.0"))
    assert (library["count"], library["days"], library["days_required"]) == (11, Decimal("19.0"), Decimal("18.0"))
    assert (prefetch["count"], prefetch["days"]) == (14, Decimal("31.5"))
    assert [p["count"] for p in prefetch["parts"]] == [5, 5, 2, 2]
    assert sum(p["days"] for p in prefetch["parts"]) == prefetch["days"]
    drive_to_approved(onboarding_plan["kms-onboarding-uat"])
    common = {a["label"]: a for a in estimate_totals()}["Common (both environments)"]
    assert common["days_remaining"] == Decimal("6.0")


def test_impact_at_50k_cards_per_day_matches_the_original_plan():
    impact = tome_call_impact()
    assert impact["jar_calls_per_day"] == 200_000
    assert impact["prefetch_calls_per_day"] == 100_000
    assert impact["reduction_percent"] == 50.0
    assert impact["basis"] == "projected"
    assert tome_call_impact(cards_per_day=10)["jar_calls_per_day"] == 40


def test_impact_scales_measured_calls_per_card_when_cards_were_issued():
    impact = tome_call_impact(measure=lambda: (1_000, 8))
    assert impact["basis"] == "projected and measured"
    assert impact["measured"] == {"cards_issued": 1_000, "tome_calls": 8, "calls_per_card": 0.008,
                                  "calls_per_day": 400, "reduction_percent": 99.8}
    assert impact["prefetch_calls_per_day"] == 100_000  # the original plan's projection stays alongside
    assert tome_call_impact(measure=lambda: (0, 0))["measured"] is None


def test_impact_survives_a_broken_counter_source():
    def broken():
        raise RuntimeError("counter backend changed")

    impact = tome_call_impact(measure=broken)
    assert impact["basis"] == "projected" and impact["measured"] is None


def test_impact_reads_the_pool_records(make_pool, make_api_key):
    from pool.services import reservation_batch_create, reservations_confirm_batch
    from refill.models import RefillRun

    pool = make_pool(pairs=20, refill_enabled=False)
    RefillRun.objects.create(pool=pool, trigger="manual", outcome="succeeded", finished_at=timezone.now(),
                             requested=20, inserted=20, tome_calls=3)
    api_key, _ = make_api_key(scopes=["reserve"])
    pairs, _ = reservation_batch_create(pool=pool, api_key=api_key, count=10, idempotency_key=None)
    # Reserved but not confirmed: no card yet (the dashboard's "cards issued" is the same count).
    assert tome_call_impact()["measured"] is None
    reservations_confirm_batch(reservation_ids=[p.reservation_id for p in pairs[:8]], api_key=api_key)
    measured = tome_call_impact()["measured"]
    assert measured["cards_issued"] == 8
    # 10 of the 20 prefetched pairs handed out: half of the 3 batch calls, 0.15 per pair, 8 cards.
    assert measured["tome_calls"] == 1.2
    assert measured["calls_per_day"] == 7_500
