"""Consumer adoption: per team approach, volume, fallback share, calls saved and a planned date."""
from __future__ import annotations

import uuid
from datetime import date, timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from keys.services import api_key_create
from monitoring.adoption import WINDOW_DAYS, consumer_adoption
from monitoring.models import ConsumerAdoption
from pool.models import PairSource, PairStatus, TokenPair
from refill.models import RefillRun

pytestmark = pytest.mark.django_db


def _issue(pool, key, *, count: int, source: str = PairSource.POOL, days_ago: int = 0) -> None:
    """``count`` cards of ``key``: pool pairs confirmed, or direct-fallback pairs minted as USED."""
    at = timezone.now() - timedelta(days=days_ago)
    if source == PairSource.POOL:
        available = TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE)
        ids = list(available.values_list("id", flat=True)[:count])
        assert len(ids) == count
        for pk in ids:
            TokenPair.objects.filter(pk=pk).update(
                status=PairStatus.USED, reserved_by=key, reservation_id=uuid.uuid4(), reserved_at=at,
                expires_at=at + timedelta(minutes=15), used_at=at)
        return
    TokenPair.objects.bulk_create([TokenPair(
        pool=pool, internal_token=f"d-{uuid.uuid4().hex}", external_ref_id=f"x-{uuid.uuid4().hex}",
        status=PairStatus.USED, source=PairSource.DIRECT, reserved_by=key, reservation_id=uuid.uuid4(),
        reserved_at=at, expires_at=at + timedelta(minutes=15), used_at=at) for _ in range(count)])


@pytest.fixture
def teams(make_pool):
    pool = make_pool("adoption", pairs=100)
    billing, _ = api_key_create(name="billing", scopes=["reserve"])
    cards, _ = api_key_create(name="cards", scopes=["reserve"])
    api_key_create(name="ledger", scopes=["reserve"])  # never calls
    _issue(pool, billing, count=14)
    _issue(pool, billing, count=7, days_ago=3)
    _issue(pool, billing, count=7, source=PairSource.DIRECT, days_ago=1)
    _issue(pool, cards, count=10, source=PairSource.DIRECT)
    _issue(pool, cards, count=2)
    _issue(pool, cards, count=5, days_ago=WINDOW_DAYS + 3)  # outside the window, still its first call
    return pool


def test_each_team_shows_approach_volume_fallback_share_and_calls_saved(teams):
    report = consumer_adoption()
    rows = {r.consumer.name: r for r in report.rows}
    billing, cards, ledger = rows["billing"], rows["cards"], rows["ledger"]
    assert (billing.pool_cards, billing.direct_cards, billing.approach) == (21, 7, "pool")
    assert billing.cards_per_day == pytest.approx(28 / 7)
    assert billing.fallback_share == pytest.approx(7 / 28)
    assert [p + d for _, p, d in billing.per_day][-1] == 14 and len(billing.per_day) == WINDOW_DAYS
    assert (cards.cards, cards.approach) == (12, "direct fallback")
    assert cards.first_call < timezone.now() - timedelta(days=WINDOW_DAYS)
    assert ledger.approach == "no calls yet" and ledger.first_call is None and ledger.calls_saved_per_day == 0
    # No refill has run: a pool card costs 0 TOME calls (stated), a fallback card 2, the live path 4.
    assert report.pool_calls_per_card == 0.0 and "no refill" in report.pool_calls_basis
    assert billing.calls_saved_per_day == pytest.approx((21 * 3 + 7 * 1) / 7)  # live 3, direct 2 per card
    assert report.summary_line == f"1 of 3 teams on the pool, {report.calls_saved_per_day:,.0f} TOME calls/day saved"


def test_lead_sets_a_planned_adoption_date_on_the_page(client, teams):
    lead = User.objects.create_user("lead", is_staff=True)
    lead.user_permissions.add(Permission.objects.get(codename="change_consumeradoption"))
    viewer = User.objects.create_user("viewer", is_staff=True)
    url = reverse("monitoring-adoption")
    ledger = consumer_adoption().rows[-1].consumer
    client.force_login(viewer)
    page = client.get(url).content.decode()
    assert "1 of 3 teams on the pool" in page and 'name="planned_adoption_date"' not in page
    assert client.post(url, {"consumer": ledger.pk, "planned_adoption_date": "2027-02-01"}).status_code == 403
    client.force_login(lead)
    response = client.post(url, {"consumer": ledger.pk, "planned_adoption_date": "2027-02-01"}, follow=True)
    assert "Planned adoption date of ledger: 2027-02-01." in response.content.decode()
    assert ConsumerAdoption.objects.get(consumer=ledger).planned_adoption_date == date(2027, 2, 1)
    assert {r.consumer.name: r.planned_adoption_date for r in consumer_adoption().rows}["ledger"] == date(2027, 2, 1)


def test_pool_card_cost_is_measured_from_the_refill_runs(teams):
    RefillRun.objects.create(pool=teams, trigger="manual", outcome="succeeded", finished_at=timezone.now(),
                             requested=100, inserted=100, tome_calls=2)
    report = consumer_adoption()
    assert report.pool_calls_per_card == pytest.approx(0.02) and report.pool_calls_basis.startswith("measured")
    billing = {r.consumer.name: r for r in report.rows}["billing"]
    assert billing.calls_saved_per_day == pytest.approx((21 * (3 - 0.02) + 7 * 1) / 7)


def test_the_page_never_scans_the_pair_table(make_pool):
    """Every query consumer_adoption makes on core_tokenpair is answered from an index: with sequential
    scans disabled, no plan still falls back to one (a plan that must scan shows it regardless)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    pool = make_pool("adoption-cost", pairs=30)
    key, _ = api_key_create(name="cost-team", scopes=["reserve"])
    _issue(pool, key, count=5)
    _issue(pool, key, count=2, source=PairSource.DIRECT, days_ago=3)
    with CaptureQueriesContext(connection) as captured:
        report = consumer_adoption()
    assert next(r for r in report.rows if r.consumer.name == "cost-team").cards == 7
    on_pairs = [q["sql"] for q in captured.captured_queries if "core_tokenpair" in q["sql"]]
    assert len(on_pairs) == 2  # the 7-day series; first and last card per key
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        for sql in on_pairs:
            cursor.execute(f"EXPLAIN {sql}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "Seq Scan on core_tokenpair" not in plan, plan
            assert "pair_consumer_reserved_idx" in plan, plan
