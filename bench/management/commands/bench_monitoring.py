"""Measure what monitoring's count queries cost on a large pair table (docs/operations.md).

Builds a TokenPair-shaped table with the same hot-path indexes in a scratch database of the
embedded PostgreSQL (never the application's database), fills it with ``--rows`` pairs (mostly
USED, a pool's worth AVAILABLE, a few RESERVED) and times the query shapes of
``monitoring/selectors.py`` and ``services.py`` (best of 3).

    python manage.py bench_monitoring --rows 5000000
    python manage.py bench_monitoring --request-costs   # /metrics scrape + one request log line
"""
from __future__ import annotations

import logging
import os
import time
import timeit

import psycopg
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.test import Client

from bench.loadgen import percentile
from devtools.embedded_db import ensure_database
from monitoring.logging import CorrelationIdFilter, JsonFormatter
from monitoring.metrics import observe_request
from pool.models import TokenPair

SCRATCH_DB = "bench_monitoring_scratch"


class Command(BaseCommand):
    help = "Time monitoring's pair-count queries on a large scratch pair table."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rows", type=int, default=1_000_000)
        parser.add_argument("--available", type=int, default=10_000)
        parser.add_argument("--keep", action="store_true", help="keep the scratch database afterwards")
        parser.add_argument("--request-costs", action="store_true",
                            help="instead: time a /metrics scrape (this database, read-only) and the "
                                 "formatting of one JSON request log line")

    def handle(self, *args: object, rows: int, available: int, keep: bool, request_costs: bool = False,
               **options: object) -> None:
        if request_costs:
            self._request_costs()
            return
        if os.environ.get("DATABASE_URL"):
            raise CommandError("runs against the embedded PostgreSQL only (unset DATABASE_URL)")

        url = ensure_database(SCRATCH_DB)
        with psycopg.connect(url, autocommit=True) as conn:
            self._load(conn, rows=rows, available=available)
            self._time_queries(conn, rows=rows)
        if not keep:
            admin_url = url.replace(f"/{SCRATCH_DB}?", "/postgres?")
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}"')

    def _load(self, conn, *, rows: int, available: int) -> None:
        conn.execute("DROP TABLE IF EXISTS pair")
        conn.execute("""CREATE TABLE pair (id bigserial PRIMARY KEY, pool_id bigint NOT NULL,
            internal_token varchar(128) UNIQUE NOT NULL, external_ref_id varchar(128) UNIQUE NOT NULL,
            status varchar(16) NOT NULL, source varchar(8) NOT NULL, reservation_id uuid UNIQUE,
            reserved_at timestamptz, expires_at timestamptz, used_at timestamptz, retired_at timestamptz,
            created_at timestamptz NOT NULL)""")
        started = time.perf_counter()
        # Oldest rows first; the newest `available` are AVAILABLE, 200 before them RESERVED,
        # every 50th older one RETIRED, every 1000th made by the direct fallback.
        conn.execute(f"""INSERT INTO pair (pool_id, internal_token, external_ref_id, status, source,
                reservation_id, reserved_at, expires_at, used_at, retired_at, created_at)
            SELECT 1, 't' || g, 'ext_' || md5(g::text),
                CASE WHEN g > {rows} - {available} THEN 'AVAILABLE' WHEN g > {rows} - {available} - 200 THEN 'RESERVED'
                     WHEN g % 50 = 0 THEN 'RETIRED' ELSE 'USED' END,
                CASE WHEN g % 1000 = 0 AND g <= {rows} - {available} THEN 'direct' ELSE 'pool' END,
                CASE WHEN g > {rows} - {available} THEN NULL ELSE gen_random_uuid() END,
                CASE WHEN g > {rows} - {available} THEN NULL
                     ELSE now() - (({rows} - g) / 100) * interval '1 second' END,
                CASE WHEN g > {rows} - {available} THEN NULL ELSE now() + interval '15 minutes' END,
                CASE WHEN g > {rows} - {available} - 200 OR g % 50 = 0 THEN NULL ELSE now() END,
                CASE WHEN g <= {rows} - {available} - 200 AND g % 50 = 0 THEN now() ELSE NULL END,
                now() - (({rows} - g) / 100) * interval '1 second'
            FROM generate_series(1, {rows}) g""")
        conn.execute("CREATE INDEX pair_available_idx ON pair (pool_id, id) WHERE status = 'AVAILABLE'")
        conn.execute("CREATE INDEX pair_lease_expiry_idx ON pair (expires_at) WHERE status = 'RESERVED'")
        conn.execute("VACUUM ANALYZE pair")
        self.stdout.write(f"loaded {rows:,} pairs in {time.perf_counter() - started:.1f} s")

    def _time_queries(self, conn, *, rows: int) -> None:
        anchor = rows - 20_000
        queries = [
            ("full grouped count (exact mode; snapshot task)",
             (f"SELECT pool_id, status, source, count(*), count(*) FILTER (WHERE id <= {anchor}) FROM pair "
              "GROUP BY 1, 2, 3")),
            ("AVAILABLE per pool (partial index)",
             "SELECT pool_id, count(*) FROM pair WHERE status = 'AVAILABLE' GROUP BY 1"),
            ("RESERVED per pool (partial index)",
             "SELECT pool_id, count(*) FROM pair WHERE status = 'RESERVED' GROUP BY 1"),
            ("rows after the snapshot anchor (primary-key range)",
             f"SELECT source, count(*) FROM pair WHERE pool_id = 1 AND id > {anchor} GROUP BY 1"),
            ("direct pairs in the alert window (primary-key range)",
             (f"SELECT count(*) FROM pair WHERE pool_id = 1 AND id > {anchor} AND source = 'direct' "
             "AND reserved_at >= now() - interval '15 minutes'")),
            ("snapshot anchor (newest id older than 5 min)",
             "SELECT id FROM pair WHERE created_at < now() - interval '5 minutes' ORDER BY id DESC LIMIT 1"),
            ("reservations in the last hour, no index (exact mode only)",
             "SELECT count(*) FROM pair WHERE pool_id = 1 AND reserved_at >= now() - interval '1 hour'"),
            ("planner row estimate", "SELECT reltuples::bigint FROM pg_class WHERE relname = 'pair'"),
        ]
        for label, sql in queries:
            best = min(self._once(conn, sql) for _ in range(3))
            self.stdout.write(f"{best * 1000:10.1f} ms  {label}")

    @staticmethod
    def _once(conn, sql: str) -> float:
        started = time.perf_counter()
        conn.execute(sql).fetchall()
        return time.perf_counter() - started

    def _request_costs(self) -> None:
        client = Client()
        client.get("/metrics")  # warm-up: imports, first connection
        scrapes = []
        for _ in range(10):
            started = time.perf_counter()
            client.get("/metrics")
            scrapes.append(time.perf_counter() - started)
        self.stdout.write(f"/metrics scrape, {TokenPair.objects.count():,} pairs: median "
                          f"{percentile(scrapes, 0.5) * 1000:.1f} ms over 10 (in process, no network)")
        record = logging.makeLogRecord({
            "name": "tokenpool.request", "msg": "request", "levelname": "INFO", "api_key_name": "svc",
            "endpoint": "/api/v1/reservations", "method": "POST", "status": 201, "duration_ms": 3.1})
        formatter, correlation = JsonFormatter(), CorrelationIdFilter()
        n = 20_000
        seconds = timeit.timeit(lambda: (correlation.filter(record), formatter.format(record)), number=n)
        self.stdout.write(f"request log line (filter + JSON format): {seconds / n * 1e6:.1f} µs")
        seconds = timeit.timeit(lambda: observe_request(endpoint="/api/v1/reservations", method="POST",
                                                        seconds=0.003), number=n)
        self.stdout.write(f"request histogram observation: {seconds / n * 1e6:.1f} µs "
                          "(multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set)")
