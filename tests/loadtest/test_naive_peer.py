"""Issue 13 §4's naive peer (bench/naive_peer), started for real under stock gunicorn gthread
against this test's PostgreSQL database, and bench_http_goals' peer phase end to end."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from django.core.management import call_command
from django.db import connection

from bench.naive_peer import schema as peer_schema
from tests.fixtures.processes import ROOT, free_port, wait_for

pytestmark = pytest.mark.django_db(transaction=True)  # the peer is another process: it must see our commits


class RunningPeer:
    def __init__(self, *, url: str, schema: str, raw_key: str) -> None:
        self.url, self.schema, self.raw_key = url, schema, raw_key

    def reserve(self, client: httpx.Client, *, key: str | None = None, pool: str = "p") -> httpx.Response:
        headers = {} if key == "" else {"Authorization": f"Api-Key {key or self.raw_key}"}
        return client.post(f"{self.url}/api/v1/reservations", json={"pool": pool}, headers=headers)


@pytest.fixture
def peer(tmp_path: Any) -> Iterator[RunningPeer]:
    with peer_schema.owned_schema(database_url=peer_schema.database_url(connection.settings_dict)) as name:
        yield from _running_peer(tmp_path, name)


def _running_peer(tmp_path: Any, name: str) -> Iterator[RunningPeer]:
    with connection.cursor() as cursor:
        raw_key = peer_schema.create_api_key(cursor, schema=name)
    port = free_port()
    env = peer_schema.gunicorn_env(database_url=peer_schema.database_url(connection.settings_dict), schema=name)
    log_path = tmp_path / "peer.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(peer_schema.gunicorn_command(port=port, workers=1, threads=4), cwd=ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def listening() -> bool:
        assert process.poll() is None, log_path.read_text()
        try:
            return httpx.get(f"{url}/api/v1/reservations", timeout=1).status_code == 401
        except httpx.TransportError:
            return False

    try:
        wait_for(listening, timeout=60, interval=0.2, message="the naive peer")
        yield RunningPeer(url=url, schema=name, raw_key=raw_key)
    finally:
        process.terminate()
        process.wait(timeout=20)


def _fill(peer: RunningPeer, count: int, pool: str = "p") -> None:
    with connection.cursor() as cursor:
        peer_schema.fill_pairs(cursor, schema=peer.schema, pool=pool, count=count)


def test_concurrent_reservations_hand_out_distinct_pairs_then_503_when_empty(peer: RunningPeer,
                                                                              run_concurrently: Any) -> None:
    _fill(peer, 30)
    _fill(peer, 5, pool="other")  # another pool's pairs are never handed out for "p"

    def client_run() -> list[tuple[int, dict]]:
        with httpx.Client(timeout=30) as client:
            return [(r.status_code, r.json()) for r in (peer.reserve(client) for _ in range(5))]

    answers = [answer for run in run_concurrently(client_run, threads=8) for answer in run]
    granted = [body for status, body in answers if status == 201]
    assert len(granted) == 30
    assert sorted(status for status, _ in answers if status != 201) == [503] * 10
    assert len({b["internal_token"] for b in granted}) == len({b["external_ref_id"] for b in granted}) == 30
    assert len({b["reservation_id"] for b in granted}) == 30
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pool, status, count(*) FROM {peer.schema}.pairs GROUP BY 1, 2 ORDER BY 1, 2")
        assert cursor.fetchall() == [("other", "AVAILABLE", 5), ("p", "RESERVED", 30)]
    with httpx.Client(timeout=30) as client:
        empty = peer.reserve(client)
    assert (empty.status_code, empty.json()) == (503, {"error": "pool_empty"})


def test_a_missing_or_unknown_key_gets_401_and_reserves_nothing(peer: RunningPeer) -> None:
    _fill(peer, 3)
    with httpx.Client(timeout=30) as client:
        assert peer.reserve(client, key="").status_code == 401
        assert peer.reserve(client, key="not-a-key").status_code == 401
        assert peer.reserve(client).status_code == 201
    with connection.cursor() as cursor:
        assert peer_schema.count_pairs(cursor, schema=peer.schema, status="AVAILABLE") == 2


def test_the_pairs_table_carries_exactly_four_indexes(peer: RunningPeer) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = 'pairs'",
                       [peer.schema])
        assert sorted(row[0] for row in cursor.fetchall()) == [
            "pairs_available_idx", "pairs_external_ref_id_key", "pairs_internal_token_key", "pairs_pkey"]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_bench_http_goals_measures_the_peer_and_cleans_up(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    # TokenPool's gunicorn (a child) must use this test database too.
    monkeypatch.setenv("DATABASE_URL", peer_schema.database_url(connection.settings_dict))
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    call_command("bench_http_goals", "--seconds", "1", "--rounds", "1", "--connections", "4", "--batch", "10",
                 "--pgbench-pairs", "2000", "--workers", "1", "--worker-threads", "2")
    out = capsys.readouterr().out
    result = json.loads(out.splitlines()[-1].removeprefix("RESULT "))
    (row,) = result["rounds"]
    assert row["peer_reserve_per_s"] > 0 and row["http_reserve_per_s"] > 0
    assert row["http_vs_peer"] == pytest.approx(row["http_reserve_per_s"] / row["peer_reserve_per_s"], rel=0.01)
    assert set(row["peer_statuses"]) == {"201"}
    # CPU per reservation of each server's workers and the database's backends, measured around each run.
    for side in ("http_reserve_cpu_ms", "peer_reserve_cpu_ms"):
        assert set(row[side]) == {"web", "postgres"} and row[side]["web"] > 0, (side, row[side])
    assert "TokenPool/naive peer" in out
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'naive\\_peer\\_%%'")
        assert cursor.fetchone()[0] == 0


def _schemas() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'naive\\_peer\\_%%'")
        return {row[0] for row in cursor.fetchall()}


def test_a_killed_runs_schema_is_dropped_by_the_next_run_and_a_live_runs_is_not() -> None:
    url = peer_schema.database_url(connection.settings_dict)
    # A run that gets SIGKILLed while it owns its schema (its finally never runs).
    killed = subprocess.Popen(
        [sys.executable, "-c", ("import sys, time; from bench.naive_peer import schema as s\n"
                                "with s.owned_schema(database_url=sys.argv[1]) as name:\n"
                                "    print(name, flush=True); time.sleep(600)"), url],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    orphan = killed.stdout.readline().strip()
    with peer_schema.owned_schema(database_url=url) as live:
        assert {orphan, live} <= _schemas()
        with psycopg.connect(url, autocommit=True) as other_run:
            assert peer_schema.drop_orphans(other_run) == []  # both owners alive: nothing dropped
            killed.kill()
            killed.wait(timeout=20)
            # The server notices the closed connection at once; give it a moment all the same.
            wait_for(lambda: peer_schema.drop_orphans(other_run) == [orphan] or orphan not in _schemas(),
                     timeout=10, interval=0.1, message="the killed run's lock to go")
            assert _schemas() >= {live} and orphan not in _schemas()
    assert live not in _schemas()
