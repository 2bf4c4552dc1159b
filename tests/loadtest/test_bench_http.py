"""bench/http.py: what bench_reserve and bench_http_goals share (their end-to-end run is in
test_naive_peer.py)."""
from __future__ import annotations

import pytest

from bench import http as bench_http
from keys.models import ApiKey
from pool import services
from pool.models import PairStatus, Pool, TokenPair


def test_wrk_ok_counts_only_2xx_answers_and_the_rate_is_per_second_of_the_run():
    result = {"statuses": {"201": 40, "200": 2, "301": 3, "503": 5}, "duration_us": 2_000_000}

    assert bench_http.wrk_ok(result) == 42
    assert bench_http.wrk_rate(result) == 21.0


def test_the_batch_script_posts_pool_and_count_with_the_key():
    script = bench_http.WRK_BATCH_SCRIPT.replace("COUNT", "10").replace("POOL", "p").replace("KEY", "k")

    assert """wrk.body = '{"pool": "p", "count": 10}'""" in script
    assert 'wrk.headers["Authorization"] = "Api-Key k"' in script
    assert script.endswith(bench_http.WRK_DONE)


@pytest.mark.django_db(transaction=True)  # VACUUM cannot run inside the test's transaction
def test_scratch_pools_and_the_bench_key_are_gone_after_cleanup():
    key, _raw = bench_http.bench_api_key()
    pools: list[Pool] = []
    first = bench_http.scratch_pool(pairs=7, pools=pools)
    empty = bench_http.scratch_pool(pairs=0, pools=pools)
    other = Pool.objects.create(name="not-a-bench-pool", refill_enabled=False)
    services.reservation_create(pool=first, api_key=key, idempotency_key=None, owner_ref=None)

    assert len(pools) == 2 and bench_http.reserved_count(first) == 1
    assert TokenPair.objects.filter(pool=first, status=PairStatus.AVAILABLE).count() == 6
    assert bench_http.ran_dry(empty) and not bench_http.ran_dry(first)
    bench_http.cleanup(pools=pools, api_key=key)

    assert not Pool.objects.filter(pk__in=[p.pk for p in pools]).exists()
    assert Pool.objects.filter(pk=other.pk).exists()
    assert not TokenPair.objects.filter(pool__in=[p.pk for p in pools]).exists()
    assert not ApiKey.objects.filter(pk=key.pk).exists()
