"""bench_claim's knobs for the history phase (issue 13 §3): the memory settings of its own cluster,
the cache states, the cache warm-up and the spread pairs' tokens. No 10M table needed."""
from __future__ import annotations

import os
import shutil

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from bench import claim_bench as cb
from bench.loadgen import percentile, percentiles
from bench.management.commands.bench_claim import cache_states
from bench.naive_peer import schema as peer_schema
from bench.pgbench import pgbench


@pytest.mark.parametrize("value", ["4GB", "128MB", "512kB", "16384", " 6GB "])
def test_memory_setting_accepts_postgresql_sizes(value):
    assert cb.memory_setting(value) == value.strip()


@pytest.mark.parametrize("value", ["", "4 GB", "4gb", "0", "-1GB", "4GiB", "4GB; DROP TABLE x"])
def test_memory_setting_rejects_anything_else(value):
    with pytest.raises(ValueError):
        cb.memory_setting(value)


def test_cache_states_parse_in_a_fixed_order():
    assert cache_states("warm,cold") == ["cold", "warm"]
    assert cache_states(" warm ") == ["warm"]
    for bad in ("", "hot", "cold,hot"):
        with pytest.raises(ValueError):
            cache_states(bad)


@pytest.mark.parametrize("args", [["--shared-buffers", "lots"], ["--effective-cache-size", "12 GB"],
                                  ["--history-cache", "lukewarm"]])
def test_bench_claim_refuses_bad_options_before_touching_any_database(args):
    with pytest.raises(CommandError):
        call_command("bench_claim", "--phases", "history", *args)


@pytest.mark.django_db
def test_history_token_is_what_the_history_load_inserts():
    # bench_claim's load_history inserts its chunks with insert_used(tag="h", first=...).
    raw = connection.connection  # the test's psycopg connection, inside the test's transaction
    cb.ensure_api_key(raw)
    (pool,) = cb.ensure_pools(raw, ["bench-history-token"])
    cb.insert_used(raw, pool_ids=[pool], rows=3, tag="h", first=4_241)

    rows = raw.execute("SELECT internal_token, external_ref_id FROM core_tokenpair WHERE pool_id = %s "
                       "ORDER BY id", [pool]).fetchall()
    assert rows == [cb.history_token(i) for i in (4_241, 4_242, 4_243)]


@pytest.mark.django_db
def test_warm_table_walks_every_index_of_the_pairs_table(make_pool):
    make_pool("bench-warm", pairs=200)
    raw = connection.connection  # the test's psycopg connection, inside the test's transaction

    # Raises if the planner would not walk one of the indexes (the warm-up would then cache nothing).
    cb.warm_table(raw)

    # Counted for the current transaction (the test's), so nobody else's scans are in these figures.
    scans = dict(raw.execute("SELECT x.indexrelid::regclass::text, pg_stat_get_xact_numscans(x.indexrelid) "
                             "FROM pg_index x WHERE x.indrelid = 'core_tokenpair'::regclass").fetchall())
    assert scans and all(n >= 1 for n in scans.values()), scans


def test_configure_private_server_applies_shared_buffers_with_a_restart(monkeypatch):
    """A throw-away cluster (initdb + two starts, a few seconds): ALTER SYSTEM, the restart that
    shared_buffers needs, and the values it then runs with."""
    pgdata = cb.ROOT / "var" / f"test_bench_claim_pg_{os.getpid()}"
    monkeypatch.setattr(cb, "PGDATA", pgdata)
    monkeypatch.delenv("EMBEDDED_PGDATA", raising=False)
    try:
        applied = cb.configure_private_server(settings={"shared_buffers": "48MB", "effective_cache_size": "1GB"})
        assert applied == {"shared_buffers": "48MB", "effective_cache_size": "1GB"}
        with psycopg.connect(cb.scratch_url("postgres"), autocommit=True) as conn:
            started = conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
        again = cb.configure_private_server(settings={"shared_buffers": "48MB"}, restart=True)
        assert again == {"shared_buffers": "48MB"}
        with psycopg.connect(cb.scratch_url("postgres"), autocommit=True) as conn:
            assert conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0] > started
    finally:
        cb.stop_private_server()
        shutil.rmtree(pgdata, ignore_errors=True)


def test_configure_private_server_refuses_a_cluster_it_does_not_own(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBEDDED_PGDATA", str(tmp_path / "shared"))

    with pytest.raises(RuntimeError, match="EMBEDDED_PGDATA"):
        cb.configure_private_server(settings={"shared_buffers": "48MB"})

    assert not (tmp_path / "shared").exists()  # nothing was started there


@pytest.mark.django_db
def test_os_cached_share_is_a_share_of_the_pairs_table_files(make_pool):
    make_pool("bench-fincore", pairs=50)

    share = cb.os_cached_share(connection.connection)

    # None only where it cannot be told (no fincore, or a server on another machine).
    assert share is None or 0.0 <= share <= 1.0
    datadir = connection.connection.execute("SHOW data_directory").fetchone()[0]
    if shutil.which("fincore") and os.path.isdir(datadir):
        assert share is not None


def test_percentiles_by_nearest_rank():
    values = [float(v) for v in range(10, 0, -1)]  # 10 .. 1, unsorted on purpose

    # The smallest value that at least that share of the values are at or below: always a measured one.
    assert [percentile(values, q) for q in (0.5, 0.9, 0.95, 1.0)] == [5.0, 9.0, 10.0, 10.0]
    assert percentile([float(v) for v in range(1, 101)], 0.07) == 7.0  # 0.07 * 100 is 7.000000000000001
    assert percentile([], 0.9) == 0.0
    assert percentile([3.0], 0.99) == 3.0


def test_percentiles_are_milliseconds_of_the_same_definition():
    seconds = [v / 1000 for v in range(1, 201)]  # 1 .. 200 ms

    assert percentiles(seconds) == pytest.approx((100.0, 190.0, 198.0))


@pytest.mark.django_db
def test_the_pgbench_runner_counts_and_logs_every_transaction():
    url = peer_schema.database_url(connection.settings_dict)
    result = pgbench(url, "SELECT 1;\n", clients=2, transactions=5, latencies=True)

    # pgbench logs whole microseconds: a SELECT 1 can log 0, so only the count and the sign are exact.
    assert len(result.latencies) == 10 and all(t >= 0 for t in result.latencies) and sum(result.latencies) > 0
    assert result.tps > 0 and result.failed == 0
    assert result.span >= max(result.latencies)


def test_the_pgbench_runner_says_why_pgbench_failed():
    with pytest.raises(RuntimeError, match="pgbench failed"):
        pgbench("postgresql:///no_such_database?host=/nonexistent", "SELECT 1;\n", clients=1, transactions=1)
