"""Measure reservation throughput and latency (docs/benchmarks.md, section "Reservation").

    python manage.py bench_reserve --pairs 20000 --threads 1,4,16
    python manage.py bench_reserve --bulk-insert-rows 100000 --skip-service --skip-http

(a) the service call ``reservation_create`` as it ships (the claim is its one raw SQL statement);
(a') the claim alone, called directly: the shipped ``claim_pairs`` (raw SQL) beside ``claim_pairs_orm``
    (bench/reserve.py: ``select_for_update(skip_locked=True)`` + ``save()`` in ``atomic``), the same
    parameters and one pair per call; nothing is patched, the service line measures what ships;
(b) HTTP ``POST /api/v1/reservations`` through a real gunicorn (gthread, 2 workers x 4 threads)
    started here on a free port, driven by ``wrk`` (``apt-get install wrk``; keep-alive, one
    connection per "thread", fixed duration) or, without wrk, by ``bench/loadgen.py`` in its
    own process (httpx threads; on 2 cores it saturates near 770 req/s on /healthz where wrk
    reaches ~2,200, so it understates the server);
(r) for reference, the same claim SQL through ``pgbench`` (the binary shipped with the embedded
    PostgreSQL; same clients, same number of transactions) and ``GET /healthz`` through the same
    gunicorn with wrk (plain Django through the whole middleware stack, no database);
(p) optionally (``--inprocess N``) CPU and wall time per request without network: Django's
    WSGIHandler called directly N times for an authenticated DRF no-op (a ScopedApiView mounted
    only for this measurement) and for the reservation;
(c) optionally the bulk insert: a direct COPY into the table (what ships; it falls back to the
    staged path on a duplicate), COPY into a staging table + ``INSERT ... SELECT ... ON CONFLICT DO
    NOTHING``, and a multi-row ``INSERT ... ON CONFLICT DO NOTHING``, in transactions of
    ``--bulk-batch`` rows.

Each run gets a fresh scratch pool of ``--pairs`` pairs (VACUUM ANALYZEd first) and makes at most
that many reservations, so the pool should never run dry and TOME is never called. Only successful
answers (2xx, a pair from the pool) count in a rate and in the percentiles; every other outcome is
reported beside them by status and error code, and a run whose pool ran dry prints
"n/a: pool ran dry" instead of a rate (the command then exits non-zero). Scratch pools, pairs
and the bench API key are deleted afterwards. The load generator shares the machine's cores with
gunicorn and PostgreSQL, like everything else here.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.wsgi import get_wsgi_application
from django.db import connection, transaction
from django.test.utils import override_settings
from django.urls import clear_url_caches

from bench import claim_bench, noop_urls
from bench.http import (
    ROOT,
    WRK_GET_SCRIPT,
    bench_api_key,
    cleanup,
    fake_pairs,
    pgbench_claim,
    ran_dry,
    reserved_count,
    run_wrk,
    scratch_pool,
    web_server,
    wrk_ok,
)
from bench.loadgen import percentiles
from bench.pgbench import pgbench_binary
from bench.reserve import TimedCalls, claim_pairs_orm, insert_bulk_multirow, timed_calls, wsgi_post
from common.errors import TokenPoolError
from keys.models import ApiKey
from pool import services
from pool.models import PairStatus, Pool, TokenPair


class Command(BaseCommand):
    help = ("Benchmark reservations (the service; the claim alone, raw SQL vs ORM; HTTP through gunicorn) "
            "and the bulk insert.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pairs", type=int, default=20_000, help="Reservations per run (and pool size).")
        parser.add_argument("--threads", default="1,4,16", help="Comma-separated thread counts.")
        parser.add_argument("--http-pairs", type=int, default=None,
                            help="Reservations per HTTP run (default: --pairs).")
        parser.add_argument("--skip-service", action="store_true")
        parser.add_argument("--skip-http", action="store_true")
        parser.add_argument("--skip-orm", action="store_true")
        parser.add_argument("--skip-pgbench", action="store_true")
        parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto",
                            help="HTTP load generator (auto: wrk when installed).")
        parser.add_argument("--http-seconds", type=int, default=10, help="Duration of each wrk run.")
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--worker-threads", type=int, default=4)
        parser.add_argument("--inprocess", type=int, default=0,
                            help="Also time N in-process WSGI requests (no-op vs reservation), CPU and wall.")
        parser.add_argument("--bulk-insert-rows", type=int, default=0,
                            help="Also compare the two bulk inserts on this many rows (e.g. 100000).")
        parser.add_argument("--bulk-batch", type=int, default=5000, help="Rows per transaction for the bulk insert.")

    def handle(self, *args: Any, **opts: Any) -> None:
        thread_counts = [int(t) for t in opts["threads"].split(",") if t.strip()]
        # SIGTERM → SystemExit, so the finally blocks stop gunicorn and delete the scratch data.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        self.stdout.write(f"bench_reserve: PostgreSQL {connection.pg_version}, {os.cpu_count()} CPUs, "
                          f"pairs/run {opts['pairs']}, threads {thread_counts}")
        key, raw_key = bench_api_key()
        pools: list[Pool] = []
        self.refused: list[str] = []
        try:
            if opts["inprocess"]:
                self.bench_inprocess(requests=opts["inprocess"], raw_key=raw_key, pools=pools)
            if opts["bulk_insert_rows"]:
                self.bench_bulk_insert(rows=opts["bulk_insert_rows"], batch=opts["bulk_batch"], pools=pools)
            if not opts["skip_service"]:
                self.run_service(opts, thread_counts, api_key=key, pools=pools)
            if not opts["skip_pgbench"]:
                for threads in thread_counts:
                    self.bench_pgbench(threads=threads, pairs=opts["pairs"], api_key=key, pools=pools)
            if not opts["skip_http"]:
                self.run_http(opts, thread_counts, raw_key=raw_key, pools=pools)
        finally:
            cleanup(pools=pools, api_key=key)
        if self.refused:
            raise CommandError(f"no rate printed for {len(self.refused)} run(s) ({'; '.join(self.refused)}): the pool "
                               "ran dry or answers were not 201; rerun with a larger --pairs/--http-pairs")

    def run_service(self, opts: dict[str, Any], thread_counts: list[int], *, api_key: ApiKey,
                    pools: list[Pool]) -> None:
        """(a) the service as it ships, then (a') the claim alone: raw SQL, and the ORM unless --skip-orm."""
        claims: list[tuple[str, Callable[..., list[TokenPair]]]] = [("claim raw SQL", services.claim_pairs)]
        if not opts["skip_orm"]:
            claims.append(("claim ORM", claim_pairs_orm))
        for threads in thread_counts:
            self.bench_service(threads=threads, pairs=opts["pairs"], api_key=api_key, pools=pools)
        for label, claim in claims:
            for threads in thread_counts:
                self.bench_claim(label=label, claim=claim, threads=threads, pairs=opts["pairs"], api_key=api_key,
                                 pools=pools)

    def run_http(self, opts: dict[str, Any], thread_counts: list[int], *, raw_key: str, pools: list[Pool]) -> None:
        """(b) and (r)'s /healthz through one gunicorn."""
        loadgen = opts["loadgen"]
        if loadgen == "auto":
            loadgen = "wrk" if shutil.which("wrk") else "python"
        with web_server(workers=opts["workers"], threads=opts["worker_threads"], say=self.stdout.write) as server:
            if loadgen == "wrk":
                for threads in thread_counts:
                    self.bench_healthz(base_url=server.base_url, connections=threads, seconds=opts["http_seconds"])
            for threads in thread_counts:
                self.bench_http(base_url=server.base_url, raw_key=raw_key, threads=threads,
                                pairs=opts["http_pairs"] or opts["pairs"], pools=pools, loadgen=loadgen,
                                seconds=opts["http_seconds"])

    # ---- (a) the service call, (a') the claim alone --------------------------------------------------

    def bench_service(self, *, threads: int, pairs: int, api_key: ApiKey, pools: list[Pool]) -> None:
        """``reservation_create`` as it ships, ``pairs`` calls over ``threads`` threads."""
        pool = scratch_pool(pairs=pairs, pools=pools)

        def reserve() -> str | None:
            try:
                pair, _ = services.reservation_create(pool=pool, api_key=api_key, idempotency_key=None, owner_ref=None)
            except TokenPoolError as exc:
                return f"{exc.status} {exc.code}"
            return None if pair.source == "pool" else "201 source=direct"  # a live TOME pair: the pool ran dry

        self.report_calls("service", threads, timed_calls(reserve, threads=threads, calls=pairs), pool=pool)

    def bench_claim(self, *, label: str, claim: Callable[..., list[TokenPair]], threads: int, pairs: int,
                    api_key: ApiKey, pools: list[Pool]) -> None:
        """``claim`` called directly (one pair per call), with the parameters the service gives it."""
        pool = scratch_pool(pairs=pairs, pools=pools)
        params = claim_bench.claim_params(pool.pk, api_key=api_key.pk, ttl=pool.reservation_ttl)

        def claim_one() -> str | None:
            return None if claim(params=params, count=1) else "no pair claimed"

        self.report_calls(label, threads, timed_calls(claim_one, threads=threads, calls=pairs), pool=pool)

    def report_calls(self, label: str, threads: int, run: TimedCalls, *, pool: Pool) -> None:
        available = TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).count()
        self.report(label, threads, len(run.latencies), run.elapsed, run.latencies, failures=run.failures,
                    dry=available == 0 and bool(run.failures))

    # ---- (b) HTTP through gunicorn ---------------------------------------------------------------------

    def bench_http(self, *, base_url: str, raw_key: str, threads: int, pairs: int, pools: list[Pool],
                   loadgen: str, seconds: int) -> None:
        pool = scratch_pool(pairs=pairs, pools=pools)
        # Warm every worker's connection and caches on another pool first (not measured).
        warm = scratch_pool(pairs=3000, pools=pools)
        if loadgen == "wrk":
            run_wrk(base_url=base_url, raw_key=raw_key, pool=warm.name, connections=threads, seconds=2)
            result = run_wrk(base_url=base_url, raw_key=raw_key, pool=pool.name, connections=threads, seconds=seconds)
            dry = ran_dry(pool)
            self._wrk_line("HTTP gunicorn wrk", threads, result, dry=dry)
            return
        self._run_load(base_url, raw_key, warm.name, threads=min(threads, 8), per_thread=200 // min(threads, 8))
        elapsed, latencies, failures = self._run_load(base_url, raw_key, pool.name, threads=threads,
                                                      per_thread=pairs // threads)
        dry = ran_dry(pool) and bool(failures)
        self.report("HTTP gunicorn py", threads, len(latencies), elapsed, latencies, failures=Counter(failures),
                    dry=dry)

    def bench_healthz(self, *, base_url: str, connections: int, seconds: int) -> None:
        result = run_wrk(base_url=base_url, connections=connections, seconds=seconds, path="/healthz",
                         script=WRK_GET_SCRIPT)
        self._wrk_line("HTTP /healthz wrk", connections, result, dry=False)

    def _wrk_line(self, label: str, connections: int, result: dict, *, dry: bool) -> None:
        """Rate of the 2xx answers only; percentiles only when every answer was 2xx (wrk's histogram
        holds them all); the other statuses and socket errors beside them."""
        ok = wrk_ok(result)
        elapsed = result["duration_us"] / 1e6
        failures = Counter({f"{status}": n for status, n in result.get("statuses", {}).items()
                            if not 200 <= int(status) < 300})
        if result["errors"]:
            failures["socket errors"] += result["errors"]
        if failures or dry:
            self.report(label, connections, ok, elapsed, [], failures=failures, dry=dry, mixed=True)
            return
        p50, p95, p99 = (result[k] / 1000 for k in ("p50", "p95", "p99"))
        self.stdout.write(f"{label:<18} threads={connections:<3} n={ok:<6} {ok / elapsed:8,.0f} /s   "
                          f"p50 {p50:6.2f} ms  p95 {p95:6.2f} ms  p99 {p99:6.2f} ms")

    def _run_load(self, base_url: str, raw_key: str, pool: str, *, threads: int, per_thread: int) -> Any:
        env = {**os.environ, "LOADGEN_API_KEY": raw_key}
        result = subprocess.run(
            [sys.executable, "-m", "bench.loadgen", "--base-url", base_url, "--pool", pool,
             "--threads", str(threads), "--per-thread", str(per_thread)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=True)
        data = json.loads(result.stdout.strip().splitlines()[-1])
        return data["elapsed"], data["latencies"], data["failures"]

    # ---- (p) in process ----------------------------------------------------------------------------------

    def bench_inprocess(self, *, requests: int, raw_key: str, pools: list[Pool]) -> None:
        pool = scratch_pool(pairs=requests + 100, pools=pools)
        body = json.dumps({"pool": pool.name}).encode()
        handler = get_wsgi_application()  # what gunicorn serves (tokenpool/wsgi.py is this call)
        with override_settings(ROOT_URLCONF=noop_urls.__name__):
            clear_url_caches()
            try:
                for label, path_info in (("no-op (auth)", "/api/v1/bench-noop"),
                                         ("reservation", "/api/v1/reservations")):
                    for _ in range(50):
                        assert wsgi_post(handler, "/api/v1/bench-noop", body=body, raw_key=raw_key).startswith("201")
                    cpu, wall = time.process_time(), time.perf_counter()
                    statuses = Counter(wsgi_post(handler, path_info, body=body, raw_key=raw_key).split(" ", 1)[0]
                                       for _ in range(requests))
                    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                    self.inprocess_line(label, requests, statuses, cpu=cpu, wall=wall)
            finally:
                clear_url_caches()

    def inprocess_line(self, label: str, requests: int, statuses: Counter[str], *, cpu: float, wall: float) -> None:
        if set(statuses) != {"201"}:
            # Per-request costs of a mix of answers would describe none of them.
            self.stdout.write(f"in-process {label:<14} n/a: answers {dict(statuses)} (only 201 counts)")
            self.refused.append(f"in-process {label}")
            return
        self.stdout.write(f"in-process {label:<14} n={requests:<6} CPU {cpu / requests * 1000:.3f} ms/request"
                          f"   wall {wall / requests * 1000:.3f} ms/request")

    # ---- (r) pgbench ------------------------------------------------------------------------------------

    def bench_pgbench(self, *, threads: int, pairs: int, api_key: ApiKey, pools: list[Pool]) -> None:
        # Skipped only when there is no pgbench at all: asked of the binary lookup itself, since a failing
        # pgbench's RuntimeError quotes its output, which may say anything.
        try:
            pgbench_binary()
        except RuntimeError:
            self.stdout.write("pgbench not found; skipped")
            return
        pool = scratch_pool(pairs=pairs, pools=pools)
        run = pgbench_claim(pool=pool, api_key=api_key, clients=threads, transactions=pairs // threads,
                            latencies=True)
        # The claim returns no row on an empty pool and pgbench still counts it as a transaction.
        latencies, claimed = run.latencies, reserved_count(pool)
        failures: Counter[str] = Counter()
        if claimed < len(latencies):
            failures["transactions that claimed nothing"] = len(latencies) - claimed
        self.report("pgbench claim SQL", threads, len(latencies), run.span if latencies else 1.0, latencies,
                    failures=failures, dry=bool(failures))

    # ---- (c) bulk insert ----------------------------------------------------------------------------------

    def bench_bulk_insert(self, *, rows: int, batch: int, pools: list[Pool]) -> None:
        for label, insert in (("direct COPY (pairs_insert_bulk)", services.pairs_insert_bulk),
                              ("staged COPY + INSERT ... SELECT ON CONFLICT", services.pairs_insert_staged),
                              ("multi-row INSERT ON CONFLICT (1,000 rows/statement)", insert_bulk_multirow)):
            pool = scratch_pool(pairs=0, pools=pools)
            data = fake_pairs(rows, secrets.token_hex(3))
            started = time.perf_counter()
            inserted = 0
            for start in range(0, rows, batch):
                with transaction.atomic():  # one transaction per TOME batch, as the refill does
                    inserted += insert(pool=pool, pairs=data[start:start + batch])
            elapsed = time.perf_counter() - started
            assert inserted == rows, (inserted, rows)
            self.stdout.write(f"bulk insert {label}: {rows} rows in {elapsed:.2f} s = "
                              f"{rows / elapsed:,.0f} rows/s ({batch} rows per transaction)")

    def report(self, label: str, threads: int, count: int, elapsed: float, latencies: list[float], *,
               failures: Counter | None = None, dry: bool = False, mixed: bool = False) -> None:
        """One result line: successes only in the rate and percentiles, the rest beside them.

        ``dry``: the pool ran out, so the rate measures the pool's size, not the service: no rate.
        ``mixed``: the latencies include the failures (wrk), so no percentiles either."""
        failed = "" if not failures else "   non-2xx/failed: " + ", ".join(
            f"{what} ×{n}" for what, n in sorted(failures.items()))
        if dry:
            self.refused.append(f"{label} threads={threads}")
            self.stdout.write(self.style.ERROR(
                f"{label:<18} threads={threads:<3} n={count:<6} n/a: pool ran dry{failed}"))
            return
        if mixed:
            self.stdout.write(self.style.WARNING(
                f"{label:<18} threads={threads:<3} n={count:<6} {count / elapsed:8,.0f} /s (2xx only)   "
                f"percentiles n/a: wrk mixed the failures into them{failed}"))
            return
        p50, p95, p99 = percentiles(latencies)
        line = (f"{label:<18} threads={threads:<3} n={count:<6} {count / elapsed:8,.0f} /s   "
                f"p50 {p50:6.2f} ms  p95 {p95:6.2f} ms  p99 {p99:6.2f} ms")
        self.stdout.write(line + failed if not failed else self.style.WARNING(line + failed))


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)

