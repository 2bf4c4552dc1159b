"""The trigger-kept pair counters (pool migration 0004): after every kind of write — reservations,
batches, confirm, release, expiry, the direct fallback, refills (COPY and the staged insert), deletes,
TRUNCATE — and under concurrent reservations on separate connections, the counters equal a fresh
COUNT(*) of the pair table; the compaction folds ended connections' rows and keeps every total."""
from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from common.errors import PoolUnavailable
from pool.counters import pair_counter_totals, pair_counters_compact
from pool.models import PairCounter, TokenPair
from pool.services import pairs_insert_staged, reservation_create, reservations_expire
from refill.services.run import refill_run
from tests.fixtures.pool import fake_pairs

pytestmark = pytest.mark.django_db(transaction=True)


def fresh_count() -> dict[int, dict[tuple[str, str], int]]:
    result: dict[int, dict[tuple[str, str], int]] = {}
    for pool_id, status, source in TokenPair.objects.values_list("pool_id", "status", "source"):
        keys = result.setdefault(pool_id, {})
        keys[(status, source)] = keys.get((status, source), 0) + 1
    return result


def assert_counters_exact() -> None:
    assert pair_counter_totals() == fresh_count()


def test_counters_follow_every_lifecycle_write(api, make_pool, tome, refill_ready):
    pool = make_pool("counted", pairs=30)
    other = make_pool("other", pairs=5)
    assert pair_counter_totals()[pool.pk] == {("AVAILABLE", "pool"): 30}
    ids = [api.post("/api/v1/reservations", {"pool": "counted"}).json()["reservation_id"] for _ in range(6)]
    assert_counters_exact()
    api.post(f"/api/v1/reservations/{ids[0]}/confirm")
    api.post(f"/api/v1/reservations/{ids[1]}/release")
    batch = api.post("/api/v1/reservations/batch", {"pool": "counted", "count": 10}).json()
    batch_ids = [r["reservation_id"] for r in batch["reservations"]]
    api.post("/api/v1/reservations/confirm/batch", {"reservation_ids": batch_ids[:4]})
    api.post("/api/v1/reservations/release/batch", {"reservation_ids": batch_ids[4:6]})
    assert_counters_exact()
    # Expiry: two leases in the past become RETIRED in one sweep statement.
    TokenPair.objects.filter(reservation_id__in=ids[2:4]).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert reservations_expire() == 2
    assert_counters_exact()
    # Drain the pool, then the direct fallback makes live pairs (inserted already RESERVED).
    api.post("/api/v1/reservations/batch", {"pool": "counted", "count": 14})
    direct = api.post("/api/v1/reservations/batch", {"pool": "counted", "count": 3}).json()
    assert {r["source"] for r in direct["reservations"]} == {"direct"}
    api.post(f"/api/v1/reservations/{direct['reservations'][0]['reservation_id']}/confirm")
    assert_counters_exact()
    totals = pair_counter_totals()[pool.pk]
    assert totals[("RESERVED", "direct")] == 2 and totals[("USED", "direct")] == 1
    assert totals[("USED", "pool")] == 5 and totals[("RETIRED", "pool")] == 5
    # A refill through TOME (COPY) and the staged insert with a duplicate batch (ON CONFLICT skips).
    assert refill_run(pool=pool, trigger="manual", count=20).inserted == 20
    pairs = fake_pairs(7)
    assert pairs_insert_staged(pool=other, pairs=pairs) == 7
    assert pairs_insert_staged(pool=other, pairs=pairs) == 0
    assert_counters_exact()
    assert pair_counter_totals()[other.pk] == {("AVAILABLE", "pool"): 12}


def test_counters_follow_updates_that_move_pairs_deletes_and_truncate(make_pool):
    pool, other = make_pool(pairs=50), make_pool(pairs=10)
    # A statement that changes no counted column writes nothing; one moving pairs between pools moves counts.
    TokenPair.objects.filter(pool=pool).update(created_at=timezone.now())
    TokenPair.objects.filter(pk__in=TokenPair.objects.filter(pool=pool).values("pk")[:15]).update(pool=other)
    assert_counters_exact()
    assert pair_counter_totals()[other.pk] == {("AVAILABLE", "pool"): 25}
    TokenPair.objects.filter(pool=other).delete()  # a bulk delete
    assert_counters_exact()
    assert other.pk not in pair_counter_totals()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE core_tokenpair CASCADE")
    assert pair_counter_totals() == {} and not PairCounter.objects.exists()


def test_a_rolled_back_write_leaves_the_counters_unchanged(make_pool):
    pool = make_pool(pairs=10)
    before = pair_counter_totals()
    with pytest.raises(RuntimeError), connection.cursor() as cursor:  # noqa: PT012 - the write, then the abort
        cursor.execute("BEGIN")
        cursor.execute("DELETE FROM core_tokenpair WHERE pool_id = %s", [pool.pk])
        cursor.execute("ROLLBACK")
        raise RuntimeError
    assert pair_counter_totals() == before == fresh_count()


def test_concurrent_reservations_on_separate_connections_keep_the_counters_exact(run_concurrently, make_pool,
                                                                                api_key, settings):
    settings.TOME_BASE_URL = "http://127.0.0.1:9"  # nobody listens: a drained pool answers 503, no fallback
    settings.TOME_MAX_ATTEMPTS = 1
    pool = make_pool("race", pairs=2000)
    key = api_key[0]

    def reserve_until_empty() -> int:
        issued = 0
        while True:
            try:
                reservation_create(pool=pool, api_key=key, idempotency_key=None, owner_ref=None)
            except PoolUnavailable:
                return issued
            issued += 1

    per_thread = run_concurrently(reserve_until_empty, threads=8)
    assert sum(per_thread) == 2000 and sum(1 for n in per_thread if n) > 1
    assert_counters_exact()
    assert pair_counter_totals()[pool.pk] == {("RESERVED", "pool"): 2000}
    # Each connection wrote its own shard: more than one shard holds this pool's counts.
    shards = set(PairCounter.objects.filter(pool=pool, status="RESERVED").values_list("shard", flat=True))
    assert len(shards) > 1


def test_compaction_folds_ended_connections_and_keeps_every_total(run_concurrently, make_pool, api_key):
    pool = make_pool("fold", pairs=300)
    key = api_key[0]

    def reserve_some() -> None:
        for _ in range(20):
            reservation_create(pool=pool, api_key=key, idempotency_key=None, owner_ref=None)

    run_concurrently(reserve_some, threads=6)  # six connections, closed afterwards
    # A shard of a connection that is gone (a pid no backend has) is folded too.
    PairCounter.objects.create(pool=pool, status="USED", source="direct", shard=2_000_000_000, n=0)
    before = pair_counter_totals()
    rows_before = PairCounter.objects.count()
    removed = pair_counters_compact()
    assert pair_counter_totals() == before == fresh_count()
    assert removed > 0 and PairCounter.objects.count() < rows_before
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity")
        alive = {row[0] for row in cursor.fetchall()}
    assert set(PairCounter.objects.values_list("shard", flat=True)) <= alive | {0}
    assert not PairCounter.objects.filter(n=0, shard=0).exists()
    assert pair_counters_compact() == 0  # nothing left to fold


def test_the_migration_counts_existing_pairs_once(make_pool):
    """The one-time population (pool migration 0004's POPULATE) gives the same totals as the triggers."""
    make_pool(pairs=40)
    pool = make_pool(pairs=5)
    TokenPair.objects.filter(pk=TokenPair.objects.filter(pool=pool).first().pk).update(
        status="RETIRED", retired_at=timezone.now())
    expected = pair_counter_totals()
    migration = __import__("pool.migrations.0004_paircounter", fromlist=["POPULATE"])
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM pool_paircounter")
        cursor.execute(migration.POPULATE)
    assert pair_counter_totals() == expected == fresh_count()
    assert Counter(PairCounter.objects.values_list("shard", flat=True)) == Counter({0: 3})


def test_counters_never_block_reservations_of_another_connection(make_pool, api_key):
    """A transaction holding its counter rows (a reservation not yet committed) does not stop another
    connection from reserving: each connection writes its own shard."""
    pool = make_pool("noblock", pairs=10)
    key = api_key[0]
    started, finish = threading.Event(), threading.Event()

    def hold_open() -> None:
        try:
            with transaction.atomic():
                reservation_create(pool=pool, api_key=key, idempotency_key=None, owner_ref=None)
                started.set()
                finish.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=hold_open)
    thread.start()
    try:
        assert started.wait(10)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '2s'")  # a wait on the other's counter row would fail here
            _pair, created = reservation_create(pool=pool, api_key=key, idempotency_key=None, owner_ref=None)
    finally:
        finish.set()
        thread.join()
    assert created
    assert_counters_exact()
    assert pair_counter_totals()[pool.pk] == {("AVAILABLE", "pool"): 8, ("RESERVED", "pool"): 2}
