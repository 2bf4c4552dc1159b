"""Issue 10 item 11a: a lease past expires_at reads as RETIRED at once, not RESERVED until the sweep."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from pool.models import PairStatus, TokenPair

pytestmark = pytest.mark.django_db


def test_reading_an_expired_lease_before_the_sweep_answers_retired_like_confirm(api, default_pool):
    live = api.post("/api/v1/reservations").json()["reservation_id"]
    expired = api.post("/api/v1/reservations").json()["reservation_id"]
    # A minute back: the test runs inside one transaction, whose now() is when the test began.
    TokenPair.objects.filter(reservation_id=expired).update(expires_at=timezone.now() - timedelta(minutes=1))

    body = api.get(f"/api/v1/reservations/{expired}").json()
    assert body["status"] == PairStatus.RETIRED  # what confirm would conclude, and the sweep write
    assert TokenPair.objects.get(reservation_id=expired).status == PairStatus.RETIRED
    assert api.post(f"/api/v1/reservations/{expired}/confirm").status_code == 409

    # A live lease reads RESERVED and writes nothing.
    assert api.get(f"/api/v1/reservations/{live}").json()["status"] == PairStatus.RESERVED
    pair = TokenPair.objects.get(reservation_id=live)
    assert pair.status == PairStatus.RESERVED and pair.retired_at is None
