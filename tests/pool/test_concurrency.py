"""Concurrent reservations on real PostgreSQL connections: a pair is handed out at most once, ever;
identical idempotent requests racing each other produce one reservation."""
from __future__ import annotations

import socket
from collections import Counter

import pytest

from common.errors import PoolUnavailable
from pool.models import PairStatus, TokenPair
from pool.services import reservation_batch_create, reservation_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def tome_unreachable(settings):
    """TOME on a port nobody listens on: once the pool is drained the fallback fails fast."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.TOME_BASE_URL = f"http://127.0.0.1:{port}"
    settings.TOME_MAX_ATTEMPTS = 1


def test_32_threads_drain_a_5000_pair_pool_and_every_pair_is_issued_once(run_concurrently, make_pool, api_key,
                                                                         tome_unreachable):
    pool = make_pool("race", pairs=5000)
    key = api_key[0]

    def reserve_until_empty() -> list[str]:
        issued = []
        while True:
            try:
                pair, created = reservation_create(pool=pool, api_key=key, idempotency_key=None, owner_ref=None)
            except PoolUnavailable:
                return issued
            assert created and pair.source == "pool"
            issued.append(pair.internal_token)

    per_thread = run_concurrently(reserve_until_empty, threads=32)
    issued = [token for tokens in per_thread for token in tokens]
    assert len(issued) == len(set(issued)) == 5000
    assert sum(1 for tokens in per_thread if tokens) > 1  # the threads really competed
    counts = Counter(TokenPair.objects.filter(pool=pool).values_list("status", flat=True))
    assert counts[PairStatus.RESERVED] + counts[PairStatus.AVAILABLE] == 5000
    assert counts[PairStatus.RESERVED] == len(issued) and counts[PairStatus.AVAILABLE] == 0
    assert set(TokenPair.objects.filter(pool=pool, status=PairStatus.RESERVED)
               .values_list("internal_token", flat=True)) == set(issued)
    assert TokenPair.objects.filter(pool=pool).values("reservation_id").distinct().count() == 5000


def test_concurrent_batches_are_all_or_nothing_and_never_overlap(run_concurrently, make_pool, api_key,
                                                                 tome_unreachable):
    pool = make_pool("batch-race", pairs=1000)
    key = api_key[0]

    def reserve_batches() -> list[list[str]]:
        batches = []
        while True:
            try:
                pairs, _ = reservation_batch_create(pool=pool, api_key=key, count=7, idempotency_key=None)
            except PoolUnavailable:
                return batches
            batches.append([p.internal_token for p in pairs])

    batches = [b for per_thread in run_concurrently(reserve_batches, threads=16) for b in per_thread]
    issued = [t for batch in batches for t in batch]
    assert all(len(batch) == 7 for batch in batches)
    assert len(issued) == len(set(issued))
    reserved = TokenPair.objects.filter(pool=pool, status=PairStatus.RESERVED).count()
    available = TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).count()
    assert reserved == len(issued) and reserved + available == 1000
    assert available < 7  # drained as far as whole batches go


def test_16_identical_idempotent_requests_make_one_reservation(run_concurrently, make_pool, api_key, api_as):
    pool = make_pool("idem", pairs=100)
    raw = api_key[1]

    def post() -> tuple[int, dict]:
        caller = api_as(raw)
        response = caller.post("/api/v1/reservations", {"pool": "idem", "owner_ref": "card-9"},
                               HTTP_IDEMPOTENCY_KEY="one-and-only")
        return response.status_code, response.json()

    results = run_concurrently(post, threads=16)
    statuses = Counter(status for status, _ in results)
    assert statuses == {201: 1, 200: 15}, statuses
    assert len({body["reservation_id"] for _, body in results}) == 1
    assert len({body["internal_token"] for _, body in results}) == 1
    assert TokenPair.objects.filter(pool=pool, status=PairStatus.RESERVED).count() == 1
    assert TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).count() == 99  # losers claimed nothing


def test_identical_idempotent_batches_racing_make_one_set(run_concurrently, make_pool, api_key, api_as):
    pool = make_pool("idem-batch", pairs=100)
    raw = api_key[1]

    def post() -> tuple[int, dict]:
        caller = api_as(raw)
        response = caller.post("/api/v1/reservations/batch", {"pool": "idem-batch", "count": 5},
                               HTTP_IDEMPOTENCY_KEY="batch-once")
        return response.status_code, response.json()

    results = run_concurrently(post, threads=8)
    assert Counter(s for s, _ in results) == {201: 1, 200: 7}
    assert len({tuple(r["reservation_id"] for r in body["reservations"]) for _, body in results}) == 1
    assert TokenPair.objects.filter(pool=pool, status=PairStatus.RESERVED).count() == 5


def test_identical_idempotent_requests_on_an_empty_pool_make_one_direct_reservation(run_concurrently, make_pool,
                                                                                   api_key, api_as, tome):
    pool = make_pool("idem-empty", pairs=0)
    raw = api_key[1]

    def post() -> tuple[int, dict]:
        caller = api_as(raw)
        response = caller.post("/api/v1/reservations", {"pool": "idem-empty"}, HTTP_IDEMPOTENCY_KEY="live-once")
        return response.status_code, response.json()

    results = run_concurrently(post, threads=6)
    assert Counter(s for s, _ in results) == {201: 1, 200: 5}
    assert len({body["reservation_id"] for _, body in results}) == 1
    assert TokenPair.objects.filter(pool=pool).exclude(status=PairStatus.AVAILABLE).count() == 1
    # live pairs made by the losers were never handed out; they joined the pool as AVAILABLE
    assert not TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE, source="direct").exists()
