"""One definition of each operations number, with its basis: the dashboard, the pool health API,
the onboarding summary's measured row and the consumer adoption page all call these.

- A *card* is a pair handed out and confirmed (USED); a reservation released or left to expire
  never became one (adoption counts live reservations too: RESERVED or USED).
- TOME calls per card, like for like with what TokenPool answers (a card created, then detokenized
  once to its internal token): live path ``LIVE_CALLS_PER_CARD`` = 3 (the library approach: create
  NS1 + NS2, detokenize NS2; what the load test measures, contract section 6); a direct-fallback card
  ``DIRECT_CALLS_PER_PAIR`` (NS1 generate + NS2 tokenize; its later lookups are answered from the
  database); a pool card its share of the refill batches, measured (:func:`pool_calls_per_card`).
  The original plan counted 4 on the live path (``PLAN_LIVE_CALLS_PER_CARD``): its detokenize goes on
  to the card number with an NS1 detokenize, which both approaches pay alike when they need the card
  number. Set against a pool card's cost that leaves that call out, 4 overstated the savings by one
  call per card; like for like it is 3.
- Rates are per hour over the tile's window (the last hour unless a window is named).
- Time to empty is net of refills: AVAILABLE ÷ (consumption − refill) at the last hour's pace; None
  while refills keep up (the pool is not draining).
"""
from __future__ import annotations

from django.db.models import Sum

from refill.models import RefillRun

__all__ = [
    "DIRECT_CALLS_PER_PAIR",
    "refill_pairs_per_hour",
    "LIVE_CALLS_BASIS",
    "LIVE_CALLS_PER_CARD",
    "LIVE_CREATE_CALLS",
    "LIVE_DETOKENIZE_CALLS",
    "PLAN_LIVE_CALLS_PER_CARD",
    "calls_per_card",
    "consumption_per_hour",
    "RATE_WINDOW_HOURS",
    "calls_saved",
    "hours_to_empty",
    "pool_calls_per_card",
]

# Each TOME call the direct fallback makes per pair: NS1 generate + NS2 tokenize.
DIRECT_CALLS_PER_PAIR = 2
# The live path per card (module docstring): create NS1 + NS2, one detokenize NS2 to the internal token.
LIVE_CREATE_CALLS = 2
LIVE_DETOKENIZE_CALLS = 1
LIVE_CALLS_PER_CARD = LIVE_CREATE_CALLS + LIVE_DETOKENIZE_CALLS
LIVE_CALLS_BASIS = ("the library approach: create NS1 + NS2, one detokenize NS2 to the internal token, as the "
                    "load test measures it (the original plan counted 4, going on to the card number with "
                    "an NS1 detokenize that both approaches pay alike)")
PLAN_LIVE_CALLS_PER_CARD = 4
# The window of the rate tiles and of the chart's consumption line.
RATE_WINDOW_HOURS = 1


def consumption_per_hour(*, reservations_now: int, reservations_then: int, hours: float) -> float:
    """Pairs handed out per hour between a snapshot and now (reservations ever, the counters): 0 until
    the snapshot is a minute old, so a fresh deployment shows no made-up rate."""
    if hours < 1 / 60:
        return 0.0
    return max(reservations_now - reservations_then, 0) / hours


def hours_to_empty(*, available: int, consumption_per_hour: float, refill_per_hour: float = 0.0) -> float | None:
    """Hours until AVAILABLE reaches zero at the last hour's consumption net of refills (None: not draining)."""
    net = consumption_per_hour - refill_per_hour
    if net <= 0:
        return None
    return available / net


def pool_calls_per_card(*, pool_ids: list[int] | None = None) -> tuple[float, str]:
    """TOME calls per pool-issued card: refill calls ÷ pairs inserted, over every refill run (measured)."""
    runs = RefillRun.objects.all() if pool_ids is None else RefillRun.objects.filter(pool_id__in=pool_ids)
    totals = runs.aggregate(calls=Sum("tome_calls"), inserted=Sum("inserted"))
    calls, inserted = totals["calls"] or 0, totals["inserted"] or 0
    if not inserted:
        return 0.0, "no refill has inserted pairs yet (0 assumed)"
    return calls / inserted, f"measured: {calls:,} refill TOME calls for {inserted:,} pairs inserted"


def calls_per_card(*, calls: float, cards: int) -> float | None:
    """TOME calls per card (None without a card): the dashboard, the adoption page and the load test."""
    return calls / cards if cards else None


def calls_saved(*, pool_cards: float, direct_cards: float, pool_calls_per_card: float) -> float:
    """TOME calls the cards did not make against the live path."""
    return (pool_cards * (LIVE_CALLS_PER_CARD - pool_calls_per_card)
            + direct_cards * (LIVE_CALLS_PER_CARD - DIRECT_CALLS_PER_PAIR))


def refill_pairs_per_hour(*, pool_id: int) -> tuple[float | None, str]:
    """A pool's measured refill speed: pairs inserted per hour of refill-run time (finished runs that
    inserted pairs), with its basis; None when no run has inserted anything yet."""
    runs = list(RefillRun.objects.filter(pool_id=pool_id, inserted__gt=0, finished_at__isnull=False)
                .values_list("inserted", "started_at", "finished_at"))
    seconds = sum((finished - started).total_seconds() for _n, started, finished in runs)
    inserted = sum(n for n, _s, _f in runs)
    if not runs or seconds <= 0:
        return None, "no refill has inserted pairs yet"
    return inserted / seconds * 3600, f"measured: {inserted:,} pairs in {seconds:,.0f} s of {len(runs)} refill run(s)"
