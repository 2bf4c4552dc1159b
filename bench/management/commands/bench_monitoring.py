"""Measure monitoring's periodic work and the dashboard on a large pair table (docs/benchmarks.md,
"Pair counters").

Migrates a scratch database of the embedded PostgreSQL (never the application's database), measures
the work on an empty pair table with ``--pools`` pools, then fills ``core_tokenpair`` with ``--rows``
pairs spread over the pools (one generate_series INSERT per pool, counter triggers on: per pool
mostly USED, ``--available`` AVAILABLE, 200 RESERVED, every 50th RETIRED, every 1000th direct; plus a
day of snapshots every 5 minutes) and measures it again:
- CPU (this process + its PostgreSQL backend, from /proc) and wall time of one run of each periodic
  task: the snapshot task (compaction + snapshots), the alert evaluation, a /metrics render; and the
  resulting share of one core at the default schedule (snapshots 5 min, alerts 1 min, a scrape every
  ``--scrape-seconds``);
- the admin dashboard's render time (median of ``--renders``, in process, no network);
- for reference, the one exact grouped count the pool migration runs once to populate the counters.

    python manage.py bench_monitoring --rows 10000000 --pools 50
    python manage.py bench_monitoring --request-costs   # /metrics scrape + one request log line
    python manage.py bench_monitoring --held-snapshot --rows 5000000 --pools 22 --available 20000

``--held-snapshot``: instead of the measurements above, on the same loaded table, single reservations
from ``--threads`` threads with the periodic work running, undisturbed and then with a REPEATABLE READ
snapshot held on another connection, ``--held-seconds`` each (bench/held_snapshot.py; docs/benchmarks.md,
"Held snapshot, whole stack").
"""
from __future__ import annotations

import logging
import os
import statistics
import time
import timeit
from collections.abc import Callable
from datetime import timedelta

import psycopg
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, connections
from django.test import Client

from bench import held_snapshot
from bench.loadgen import percentile
from devtools.embedded_db import ensure_database
from keys.services import api_key_create
from monitoring.alerts import alerts_evaluate
from monitoring.logging import CorrelationIdFilter, JsonFormatter
from monitoring.metrics import metrics_render, observe_request
from monitoring.tasks import snapshots_take_task
from pool.models import Pool, TokenPair
from pool.services import CLAIM_ONE_SQL

SCRATCH_DB = "bench_monitoring_scratch"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def backend_cpu_seconds() -> float:
    """CPU seconds (user + system) of this connection's PostgreSQL backend so far."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_and_wall(work: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median CPU seconds (process + backend) and median wall seconds of ``repeat`` runs."""
    cpu, wall = [], []
    for _ in range(repeat):
        backend, process, started = backend_cpu_seconds(), time.process_time(), time.perf_counter()
        work()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - process + backend_cpu_seconds() - backend)
    return statistics.median(cpu), statistics.median(wall)


class Command(BaseCommand):
    help = "Monitoring's periodic work and the dashboard, empty vs a large pair table (scratch database)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rows", type=int, default=10_000_000)
        parser.add_argument("--pools", type=int, default=50)
        parser.add_argument("--available", type=int, default=10_000, help="AVAILABLE pairs per pool")
        parser.add_argument("--repeat", type=int, default=5, help="runs of each periodic task (median)")
        parser.add_argument("--renders", type=int, default=5, help="dashboard renders (median)")
        parser.add_argument("--scrape-seconds", type=int, default=15, help="assumed Prometheus scrape interval")
        parser.add_argument("--trigger-claims", type=int, default=500,
                            help="claims (and confirms) run under EXPLAIN ANALYZE for the counter triggers' share")
        parser.add_argument("--keep", action="store_true", help="keep the scratch database afterwards")
        parser.add_argument("--request-costs", action="store_true",
                            help="instead: time a /metrics scrape (this database, read-only) and the "
                                 "formatting of one JSON request log line")
        parser.add_argument("--held-snapshot", action="store_true",
                            help="instead: reservations/s with the periodic work running, undisturbed and then "
                                 "with a REPEATABLE READ snapshot held (bench/held_snapshot.py)")
        parser.add_argument("--held-seconds", type=int, default=80, help="length of each --held-snapshot run")
        parser.add_argument("--threads", type=int, default=8, help="reserving threads of --held-snapshot")
        parser.add_argument("--window", type=int, default=10, help="seconds per reported rate window")
        parser.add_argument("--counter-triggers-off", action="store_true",
                            help="--held-snapshot with the pair counter triggers disabled (scratch database only)")

    def handle(self, *args: object, rows: int, pools: int, available: int, repeat: int, renders: int,
               scrape_seconds: int, trigger_claims: int, keep: bool, request_costs: bool = False,
               held_snapshot: bool = False, **options: object) -> None:
        if request_costs:
            self._request_costs()
            return
        if os.environ.get("DATABASE_URL"):
            raise CommandError("runs against the embedded PostgreSQL only (unset DATABASE_URL)")
        url = ensure_database(SCRATCH_DB)
        default = connections["default"]
        name = default.settings_dict["NAME"]
        default.close()
        default.settings_dict["NAME"] = SCRATCH_DB
        try:
            call_command("migrate", verbosity=0)
            self._setup(pools=pools)
            if held_snapshot:
                self._load(rows=rows, available=available)
                self._held_snapshot(url=url, **options)
                return
            self._measure(label="empty pair table", repeat=repeat, renders=renders, scrape_seconds=scrape_seconds)
            self._load(rows=rows, available=available)
            self._measure(label=f"{TokenPair.objects.order_by().count():,} pairs", repeat=repeat, renders=renders,
                          scrape_seconds=scrape_seconds)
            self._populate_cost()
            self._trigger_cost(claims=trigger_claims)
        finally:
            default.close()
            default.settings_dict["NAME"] = name
            if not keep:
                with psycopg.connect(url.replace(f"/{SCRATCH_DB}?", "/postgres?"), autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')

    def _setup(self, *, pools: int) -> None:
        TokenPair.objects.all().delete()
        Pool.objects.all().delete()
        Pool.objects.bulk_create([Pool(name=f"bench-{i:02d}", refill_enabled=False) for i in range(pools)])
        self.key, _ = api_key_create(name=f"bench-monitoring-{time.time_ns()}", scopes=["reserve"])
        self.user = get_user_model().objects.create_superuser(f"bench{time.time_ns()}", "b@example.com", "x")
        # A day of history every 5 minutes, as the snapshot schedule would have left it.
        with connection.cursor() as cursor:
            cursor.execute("""INSERT INTO core_poolsnapshot (pool_id, taken_at, available, reserved, used, retired,
                    reserved_total, reserved_direct, tome_calls_total, anchor_id, rows_pool, rows_direct)
                SELECT p.id, now() - m * interval '5 minutes', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
                FROM core_pool p, generate_series(1, 288) m""")

    def _load(self, *, rows: int, available: int) -> None:
        ids = list(Pool.objects.order_by("pk").values_list("pk", flat=True))
        per_pool, key = rows // len(ids), self.key.pk
        started = time.perf_counter()
        live = per_pool - available
        with connection.cursor() as cursor:
            for pool_id in ids:
                cursor.execute(f"""INSERT INTO core_tokenpair (pool_id, internal_token, external_ref_id, status,
                        source, reservation_id, reserved_by_id, reserved_at, expires_at, used_at, retired_at,
                        created_at)
                    SELECT {pool_id}, 't{pool_id}_' || g, 'ext_{pool_id}_' || g,
                        CASE WHEN g > {live} THEN 'AVAILABLE' WHEN g > {live} - 200 THEN 'RESERVED'
                             WHEN g %% 50 = 0 THEN 'RETIRED' ELSE 'USED' END,
                        CASE WHEN g %% 1000 = 0 AND g <= {live} THEN 'direct' ELSE 'pool' END,
                        CASE WHEN g > {live} THEN NULL ELSE gen_random_uuid() END,
                        CASE WHEN g > {live} THEN NULL ELSE %s END,
                        CASE WHEN g > {live} THEN NULL ELSE now() - ({live} - g) * interval '1 second' END,
                        CASE WHEN g > {live} THEN NULL ELSE now() + interval '15 minutes' END,
                        CASE WHEN g > {live} - 200 OR g %% 50 = 0 THEN NULL ELSE now() END,
                        CASE WHEN g <= {live} - 200 AND g %% 50 = 0 THEN now() END,
                        now() - ({per_pool} - g) * interval '1 second'
                    FROM generate_series(1, {per_pool}) g""", [key])  # noqa: S608 - integers only
            loaded = time.perf_counter() - started
            cursor.execute("VACUUM ANALYZE core_tokenpair")
        self.stdout.write(f"loaded {per_pool * len(ids):,} pairs into {len(ids)} pools in {loaded:.0f} s "
                          f"(+ VACUUM ANALYZE {time.perf_counter() - started - loaded:.0f} s)")

    def _measure(self, *, label: str, repeat: int, renders: int, scrape_seconds: int) -> None:
        tasks = [
            ("snapshot task (compaction + snapshots)", snapshots_take_task, 300),
            ("alert evaluation", lambda: alerts_evaluate(probe=lambda: True, notify=False), 60),
            ("/metrics render", metrics_render, scrape_seconds),
        ]
        self.stdout.write(f"-- {label}, {Pool.objects.count()} pools")
        share = 0.0
        for name, work, every in tasks:
            work()  # warm-up
            cpu, wall = cpu_and_wall(work, repeat)
            share += cpu / every
            self.stdout.write(f"   {name:40s} CPU {cpu * 1000:8.1f} ms  wall {wall * 1000:8.1f} ms  (every {every} s)")
        self.stdout.write(f"   periodic work: {share * 100:.2f} % of one core")
        client = Client()
        client.force_login(self.user)
        client.get("/admin/dashboard/")
        times = []
        for _ in range(renders):
            started = time.perf_counter()
            assert client.get("/admin/dashboard/").status_code == 200
            times.append(time.perf_counter() - started)
        self.stdout.write(f"   dashboard render: median {statistics.median(times) * 1000:.0f} ms over {renders}")

    def _populate_cost(self) -> None:
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pool_id, status, source, count(*) FROM core_tokenpair GROUP BY 1, 2, 3")
            cursor.fetchall()
        self.stdout.write(f"one-time counter population (pool migration 0004's grouped count): "
                          f"{time.perf_counter() - started:.1f} s")

    def _trigger_cost(self, *, claims: int) -> None:
        """Median execution time of the shipped claim statement and of a confirm (RESERVED -> USED) with the
        counter triggers and without them (disabled in this scratch database only), as EXPLAIN ANALYZE
        reports them (autocommit), and the part spent in the trigger."""
        for enabled in (True, False, True):
            if not enabled:
                with connection.cursor() as cursor:
                    for op in ("insert", "update", "delete", "truncate"):
                        cursor.execute(f"ALTER TABLE core_tokenpair DISABLE TRIGGER pool_paircounter_{op}")
            for name, (total, trigger) in self._explain_claims(claims=claims).items():
                state = "on " if enabled else "off"
                self.stdout.write(f"{name:7s} triggers {state}: median {statistics.median(total):.3f} ms, of which "
                                  f"the counter trigger {statistics.median(trigger):.3f} ms "
                                  f"(EXPLAIN ANALYZE, {claims} runs)")
            if not enabled:
                with connection.cursor() as cursor:
                    for op in ("insert", "update", "delete", "truncate"):
                        cursor.execute(f"ALTER TABLE core_tokenpair ENABLE TRIGGER pool_paircounter_{op}")

    def _explain_claims(self, *, claims: int) -> dict[str, tuple[list[float], list[float]]]:
        pool = Pool.objects.order_by("pk").first()
        params = {"pool": pool.pk, "after": 0, "api_key": self.key.pk, "owner_ref": None, "idempotency_key": None,
                  "idempotency_index": None, "fingerprint": None, "ttl": timedelta(minutes=15)}
        confirm = "UPDATE core_tokenpair SET status = 'USED', used_at = now() WHERE id = %(id)s AND status = 'RESERVED'"
        results: dict[str, tuple[list[float], list[float]]] = {"claim": ([], []), "confirm": ([], [])}
        with connection.cursor() as cursor:
            for _ in range(claims):
                cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + CLAIM_ONE_SQL, params)
                plan = cursor.fetchone()[0][0]
                cursor.execute("SELECT max(id) FROM core_tokenpair WHERE pool_id = %s AND status = 'RESERVED'",
                               [pool.pk])
                params["after"] = cursor.fetchone()[0]
                cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + confirm, {"id": params["after"]})
                for name, got in (("claim", plan), ("confirm", cursor.fetchone()[0][0])):
                    results[name][0].append(got["Execution Time"])
                    results[name][1].append(sum(t["Time"] for t in got.get("Triggers", [])
                                                if t["Trigger Name"].startswith("pool_paircounter")))
        return results

    def _held_snapshot(self, *, url: str, **options: object) -> None:
        seconds, threads, window = (int(options[k]) for k in ("held_seconds", "threads", "window"))  # type: ignore[call-overload]
        self.stdout.write(f"{threads} threads of single reservations over {Pool.objects.count()} pools, "
                          f"{seconds} s undisturbed, then {seconds} s with a REPEATABLE READ snapshot held")
        if options.get("counter_triggers_off"):
            self.stdout.write("   pair counter triggers DISABLED in the scratch database")
            with connection.cursor() as cursor:
                for op in ("insert", "update", "delete", "truncate"):
                    cursor.execute(f"ALTER TABLE core_tokenpair DISABLE TRIGGER pool_paircounter_{op}")
        results = []
        for label, hold in (("undisturbed", None), ("snapshot held", url)):
            with connection.cursor() as cursor:
                cursor.execute("VACUUM core_tokenpair, pool_paircounter")
            results.append(held_snapshot.run(label=label, key=self.key, threads=threads, seconds=seconds,
                                             window=window, hold_url=hold, probe=self._trigger_probe))
            self.stdout.write(f"   {label}: {' / '.join(f'{w:,.0f}' for w in results[-1].windows)} reservations/s")
        held_snapshot.report(results, self.stdout.write)

    def _trigger_probe(self) -> str:
        """200 claims + confirms on this connection under EXPLAIN ANALYZE: the counter trigger's share,
        first 50 vs last 50 (this connection's own counter rows get 400 updates meanwhile)."""
        got = self._explain_claims(claims=200)
        parts = []
        for name, (total, trigger) in got.items():
            parts.append(f"{name} median ms first 50 / last 50: total {statistics.median(total[:50]):.3f} / "
                         f"{statistics.median(total[-50:]):.3f}, counter trigger {statistics.median(trigger[:50]):.3f}"
                         f" / {statistics.median(trigger[-50:]):.3f}")
        return "EXPLAIN ANALYZE probe after the run: " + "; ".join(parts)

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
