"""Consumer adoption (a selector): which consuming teams call the pool, since when, how much, and
how many TOME calls each saves against the live path.

A *consumer* is ``keys.Consumer`` (a team; its API keys are how it calls). A card is a pair the
team's keys reserved (``reserved_at``), pool-issued or minted by the direct fallback. TOME calls per
card, with their basis:
- live path (the library approach): ``LIVE_CALLS_PER_CARD`` = 3 (create NS1 + NS2, detokenize NS2;
  monitoring/numbers.py says why the plan's 4 saves the same calls);
- pool card: its share of the refill batches (this deployment's refill runs' TOME calls ÷ pairs they
  inserted, measured); lookups and detokenizes of issued pairs are answered from the database;
- direct fallback card: ``DIRECT_CALLS_PER_PAIR`` = 2 live calls (NS1 generate + NS2 tokenize).
A team that still calls TOME directly through the library is invisible here (its calls never reach
TokenPool): it shows as "no calls yet".

Cost: never a scan of the pair table. The partial index ``pair_consumer_reserved_idx`` (pool app:
``(reserved_by, reserved_at) INCLUDE (status, source) WHERE reserved_by IS NOT NULL``) answers each key's
first and last card with two index probes and the 7-day series from the window's index entries alone
(index-only), so a page view costs what the keys reserved in 7 days, whatever the table's size
(tests/monitoring/test_adoption.py checks the plans).

Library-only teams cannot be told apart: their calls go from the library straight to TOME, and TOME's
call log (docs/tome-api.md; the emulator's ``/v1/admin/stats``) records namespace, operation, status,
item count and correlation id per call, not which team made it (every library shares the client token).
The page says so; such a team shows as "no calls yet" with its planned adoption date.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import TruncDate
from django.utils import timezone

from keys.models import ApiKey, ApiKeyUsage, Consumer
from monitoring.models import ConsumerAdoption
from monitoring.numbers import DIRECT_CALLS_PER_PAIR, LIVE_CALLS_PER_CARD, calls_saved, pool_calls_per_card
from pool.models import PairSource, PairStatus, TokenPair

__all__ = ["AdoptionReport", "ConsumerAdoptionRow", "consumer_adoption"]

WINDOW_DAYS = 7
CARD_STATUSES = (PairStatus.RESERVED, PairStatus.USED)


@dataclass
class ConsumerAdoptionRow:
    consumer: Consumer
    keys: int
    first_call: datetime | None = None
    last_call: datetime | None = None
    per_day: list[tuple[date, int, int]] = field(default_factory=list)  # (day, pool cards, direct cards)
    planned_adoption_date: date | None = None
    calls_saved_per_day: float = 0.0

    @property
    def pool_cards(self) -> int:
        return sum(p for _, p, _ in self.per_day)

    @property
    def direct_cards(self) -> int:
        return sum(d for _, _, d in self.per_day)

    @property
    def cards(self) -> int:
        return self.pool_cards + self.direct_cards

    @property
    def cards_per_day(self) -> float:
        return self.cards / WINDOW_DAYS

    @property
    def fallback_share(self) -> float | None:
        return self.direct_cards / self.cards if self.cards else None

    @property
    def approach(self) -> str:
        if not self.cards:
            return "no calls yet" if self.first_call is None else "idle (no cards in 7 days)"
        return "direct fallback" if self.direct_cards > self.pool_cards else "pool"

    @property
    def on_pool(self) -> bool:
        return self.approach == "pool"

    @property
    def spark(self) -> list[dict[str, object]]:
        """Stacked bars of the 7-day series (pool below, fallback above) in a 112 × 24 box."""
        top = max([p + d for _, p, d in self.per_day] + [1])
        bars = []
        for n, (day, pool, direct) in enumerate(self.per_day):
            pool_h, direct_h = 22 * pool / top, 22 * direct / top
            bars.append({"x": n * 16, "pool_y": 24 - pool_h, "pool_h": pool_h, "direct_y": 24 - pool_h - direct_h,
                         "direct_h": direct_h, "title": f"{day:%Y-%m-%d}: {pool} pool, {direct} fallback"})
        return bars


@dataclass
class AdoptionReport:
    rows: list[ConsumerAdoptionRow]
    pool_calls_per_card: float
    pool_calls_basis: str
    live_calls_per_card: int
    direct_calls_per_card: int
    days: list[date]

    @property
    def teams_on_pool(self) -> int:
        return sum(1 for r in self.rows if r.on_pool)

    @property
    def calls_saved_per_day(self) -> float:
        return sum(r.calls_saved_per_day for r in self.rows)

    @property
    def summary_line(self) -> str:
        return (f"{self.teams_on_pool} of {len(self.rows)} teams on the pool, "
                f"{self.calls_saved_per_day:,.0f} TOME calls/day saved")


def _key_consumers() -> tuple[dict[int, int], dict[int, int]]:
    key_consumer = dict(ApiKey.objects.values_list("pk", "consumer_id"))
    key_counts: dict[int, int] = {}
    for consumer_id in key_consumer.values():
        key_counts[consumer_id] = key_counts.get(consumer_id, 0) + 1
    return key_consumer, key_counts


def _first_last(rows: dict[int, ConsumerAdoptionRow], key_consumer: dict[int, int]) -> None:
    # Per key, the first and the last entry of pair_consumer_reserved_idx: two index probes per key.
    of_key = TokenPair.objects.filter(reserved_by=OuterRef("pk"), reserved_at__isnull=False).values("reserved_at")
    spans = ApiKey.objects.annotate(first=Subquery(of_key.order_by("reserved_at")[:1]),
                                    last=Subquery(of_key.order_by("-reserved_at")[:1])).values("pk", "first", "last")
    usage = dict(ApiKeyUsage.objects.values_list("api_key_id", "last_used_at"))
    for span in spans:
        row = rows[key_consumer[span["pk"]]]
        row.first_call = min(filter(None, [row.first_call, span["first"]]), default=None)
        row.last_call = max(filter(None, [row.last_call, span["last"]]), default=None)
    for key_id, used in usage.items():
        row = rows[key_consumer[key_id]]
        row.last_call = max(filter(None, [row.last_call, used]), default=None)
        row.first_call = row.first_call or used


def consumer_adoption(*, now: datetime | None = None) -> AdoptionReport:
    now = now or timezone.now()
    today = timezone.localdate(now)
    days = [today - timedelta(days=n) for n in range(WINDOW_DAYS - 1, -1, -1)]
    key_consumer, key_counts = _key_consumers()
    plans = dict(ConsumerAdoption.objects.values_list("consumer_id", "planned_adoption_date"))
    rows = {c.pk: ConsumerAdoptionRow(consumer=c, keys=key_counts.get(c.pk, 0), planned_adoption_date=plans.get(c.pk))
            for c in Consumer.objects.order_by("name")}
    counts: dict[tuple[int, date, str], int] = {}
    # Cards: pairs reserved and not released or expired (RETIRED).
    recent = (TokenPair.objects.filter(reserved_by__in=list(key_consumer), status__in=CARD_STATUSES,
                                       reserved_at__gte=now - timedelta(days=WINDOW_DAYS))
              .annotate(day=TruncDate("reserved_at")).values("reserved_by", "day", "source")
              .annotate(n=Count("id")).order_by())
    for r in recent:
        key = (key_consumer[r["reserved_by"]], r["day"], r["source"])
        counts[key] = counts.get(key, 0) + r["n"]
    _first_last(rows, key_consumer)
    per_card, basis = pool_calls_per_card()
    for pk, row in rows.items():
        row.per_day = [(d, counts.get((pk, d, PairSource.POOL), 0), counts.get((pk, d, PairSource.DIRECT), 0))
                       for d in days]
        row.calls_saved_per_day = calls_saved(pool_cards=row.pool_cards, direct_cards=row.direct_cards,
                                              pool_calls_per_card=per_card) / WINDOW_DAYS
    return AdoptionReport(rows=list(rows.values()), pool_calls_per_card=per_card, pool_calls_basis=basis,
                          live_calls_per_card=LIVE_CALLS_PER_CARD, direct_calls_per_card=DIRECT_CALLS_PER_PAIR,
                          days=days)
