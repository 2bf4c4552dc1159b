"""Measure reservation throughput and latency (docs/benchmarks.md, section "Reservation").

    python manage.py bench_reserve --pairs 20000 --threads 1,4,16
    python manage.py bench_reserve --bulk-insert-rows 100000 --skip-service --skip-http

(a) the service call ``reservation_create`` with the claim as the one raw SQL statement (what ships)
    and as the ORM variant (``select_for_update(skip_locked=True)`` + ``save()`` in ``atomic``);
(b) HTTP ``POST /api/v1/reservations`` through a real gunicorn (gthread, 2 workers x 4 threads)
    started here on a free port, driven by ``wrk`` (``apt-get install wrk``; keep-alive, one
    connection per "thread", fixed duration) or, without wrk, by ``core/pool/loadgen.py`` in its
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
import tempfile
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator
from unittest import mock

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction
from django.utils import timezone

from core.api.models import ApiKey
from core.errors import TokenPoolError
from core.pool import services
from core.pool.loadgen import percentiles, run_timed
from core.pool.models import PairStatus, Pool, TokenPair
from tokenpool.netutil import child_pids, free_port, stop_process, wait_answering
from tokenpool.runner import web_command

ROOT = Path(__file__).resolve().parents[3]

# wrk's latency histogram mixes every answer, so the statuses are counted per thread (response())
# and summed in done(); a run with any non-2xx answer gets no percentiles (see _wrk_line).
WRK_DONE = """
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args) statuses = {} end
response = function(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
done = function(summary, latency, requests)
  local e = summary.errors
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do counts[status] = (counts[status] or 0) + n end
  end
  local parts = {}
  for status, n in pairs(counts) do table.insert(parts, string.format('"%d": %d', status, n)) end
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "non2xx": %d, "errors": %d, "p50": %d, "p95": %d, "p99": %d, "statuses": {%s}}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), table.concat(parts, ", ")))
end
"""
WRK_GET_SCRIPT = WRK_DONE
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"pool": "POOL"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Api-Key KEY"
""" + WRK_DONE


# ---- the ORM variant of the claim, for comparison only ------------------------------------------

def claim_pairs_orm(*, params: dict[str, Any], count: int) -> list[TokenPair]:
    """What the claim would be with the ORM: SELECT ... FOR UPDATE SKIP LOCKED, then save() each
    row, inside atomic (BEGIN, SELECT, UPDATE x count, COMMIT)."""
    with transaction.atomic():
        pairs = list(TokenPair.objects.select_for_update(skip_locked=True)
                     .filter(pool_id=params["pool"], status=PairStatus.AVAILABLE).order_by("id")[:count])
        if len(pairs) < count:
            return []
        now = timezone.now()
        for index, pair in enumerate(pairs):
            pair.status = PairStatus.RESERVED
            pair.reservation_id = uuid.uuid4()
            pair.reserved_by_id = params["api_key"]
            pair.owner_ref = params["owner_ref"]
            pair.idempotency_key = params["idempotency_key"]
            pair.idempotency_index = index if params["idempotency_key"] else None
            pair.request_fingerprint = params["fingerprint"]
            pair.reserved_at = now
            pair.expires_at = now + params["ttl"]
            pair.save(update_fields=["status", "reservation_id", "reserved_by", "owner_ref", "idempotency_key",
                                     "idempotency_index", "request_fingerprint", "reserved_at", "expires_at"])
            pair.pool_name = None
    return pairs


def insert_bulk_multirow(*, pool: Pool, pairs: list[Any], rows_per_statement: int = 1000) -> int:
    """The alternative bulk insert: multi-row INSERT ... ON CONFLICT DO NOTHING."""
    inserted = 0
    with transaction.atomic(), connection.cursor() as cursor:
        for start in range(0, len(pairs), rows_per_statement):
            chunk = pairs[start:start + rows_per_statement]
            values = ", ".join(["(%s, %s, %s, 'AVAILABLE', 'pool', now())"] * len(chunk))
            params: list[Any] = []
            for pair in chunk:
                params.extend((pool.pk, pair.internal_token, pair.external_ref_id))
            cursor.execute("INSERT INTO core_tokenpair (pool_id, internal_token, external_ref_id, status, source, "
                           f"created_at) VALUES {values} ON CONFLICT DO NOTHING", params)
            inserted += cursor.rowcount
    return inserted


# ---- helpers -------------------------------------------------------------------------------------------

def fake_pairs(count: int, tag: str) -> list[Any]:
    from tokenpool_tome.client import TokenPair as TomePair

    return [TomePair(f"b{tag}{i:011d}", f"ext_bench_{tag}_{i:011d}") for i in range(count)]


def _cpu_seconds(pid: int) -> float:
    """utime + stime of one process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _database_backends(database: str) -> list[int]:
    """PostgreSQL backends connected to ``database`` (their process title names it)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    title = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title.startswith("postgres: ") and f" {database} " in title:
                pids.append(int(entry))
    return pids


@contextmanager
def cpu_per_request(*, server_pid: int, database: str) -> Iterator[dict[str, float]]:
    """CPU seconds (utime + stime, /proc) used meanwhile by the web server's worker processes and by
    the PostgreSQL backends of ``database``; the caller divides by the answers it counted."""
    def sample() -> dict[str, dict[int, float]]:
        return {"web": {pid: _cpu_seconds(pid) for pid in child_pids(server_pid)},
                "postgres": {pid: _cpu_seconds(pid) for pid in _database_backends(database)}}

    used: dict[str, float] = {}
    before = sample()
    yield used
    after = sample()
    for group, pids in after.items():
        used[group] = sum(seconds - before[group].get(pid, 0.0) for pid, seconds in pids.items())


def wrk_ok(result: dict) -> int:
    """The 2xx answers of a wrk run (``RESULT`` of ``WRK_DONE``): its ``non2xx`` is wrk's status-error
    count, which leaves out 1xx and 3xx answers."""
    return sum(n for status, n in result["statuses"].items() if 200 <= int(status) < 300)


def pgbench_binary() -> str | None:
    """``pgbench`` on PATH, else the one shipped with the embedded PostgreSQL (None when neither):
    claim_bench's lookup."""
    from core.pool import claim_bench

    try:
        return claim_bench.pgbench_binary()
    except RuntimeError:
        return None


def pgbench_claim_script(*, pool: Pool, api_key: ApiKey, count: int = 1) -> str:
    """The service's own claim SQL for ``count`` pairs of ``pool``, inlined as one pgbench script line;
    from the front of the pool (pgbench keeps no per-process cursor)."""
    params = {"pool": pool.pk, "api_key": api_key.pk, "owner_ref": None, "idempotency_key": None,
              "fingerprint": None, "ttl": pool.reservation_ttl, "idempotency_index": None, "after": 0,
              "count": count}
    sql = services._CLAIM_ONE_SQL if count == 1 else services._CLAIM_EXACTLY_SQL
    with connection.cursor() as cursor:
        statement = cursor.mogrify(sql, params)
    return " ".join(statement.split()) + ";\n"


def pgbench_env() -> dict[str, str]:
    """The environment that points pgbench at Django's database (libpq PG* variables)."""
    sd = connection.settings_dict
    return {**os.environ, "PGHOST": str(sd.get("HOST") or ""), "PGPORT": str(sd.get("PORT") or ""),
            "PGUSER": sd.get("USER") or "", "PGPASSWORD": sd.get("PASSWORD") or "", "PGDATABASE": sd["NAME"]}


def vacuum_pairs() -> None:
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE core_tokenpair")


class Command(BaseCommand):
    help = "Benchmark reservations (service raw SQL vs ORM, HTTP through gunicorn) and the bulk insert."

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
        key, raw_key = ApiKey.objects.create_key(name=f"bench-{secrets.token_hex(3)}", scopes=["reserve"],
                                                 rate_limit_per_second=10_000_000)
        pools: list[Pool] = []
        self.refused: list[str] = []
        try:
            if opts["inprocess"]:
                self.bench_inprocess(requests=opts["inprocess"], raw_key=raw_key, pools=pools)
            if opts["bulk_insert_rows"]:
                self.bench_bulk_insert(rows=opts["bulk_insert_rows"], batch=opts["bulk_batch"], pools=pools)
            if not opts["skip_service"]:
                variants = [("raw SQL", None)] + ([] if opts["skip_orm"] else [("ORM", claim_pairs_orm)])
                for label, claim in variants:
                    for threads in thread_counts:
                        self.bench_service(label=label, claim=claim, threads=threads, pairs=opts["pairs"],
                                           api_key=key, pools=pools)
            if not opts["skip_pgbench"]:
                for threads in thread_counts:
                    self.bench_pgbench(threads=threads, pairs=opts["pairs"], api_key=key, pools=pools)
            if not opts["skip_http"]:
                loadgen = opts["loadgen"]
                if loadgen == "auto":
                    loadgen = "wrk" if shutil.which("wrk") else "python"
                with self.gunicorn(workers=opts["workers"], threads=opts["worker_threads"]) as base_url:
                    if loadgen == "wrk":
                        for threads in thread_counts:
                            self.bench_healthz(base_url=base_url, connections=threads, seconds=opts["http_seconds"])
                    for threads in thread_counts:
                        self.bench_http(base_url=base_url, raw_key=raw_key, threads=threads,
                                        pairs=opts["http_pairs"] or opts["pairs"], pools=pools,
                                        loadgen=loadgen, seconds=opts["http_seconds"])
        finally:
            self.cleanup(pools=pools, api_key=key)
        if self.refused:
            raise CommandError(f"no rate printed for {len(self.refused)} run(s) ({'; '.join(self.refused)}): the pool "
                               "ran dry or answers were not 201; rerun with a larger --pairs/--http-pairs")

    # ---- scratch data ----------------------------------------------------------------------------------

    def scratch_pool(self, *, pairs: int, pools: list[Pool]) -> Pool:
        tag = secrets.token_hex(3)
        pool = Pool.objects.create(name=f"bench-{tag}", refill_enabled=False, target_size=max(pairs, 2),
                                   low_watermark=1, critical_watermark=0)
        pools.append(pool)
        batch = fake_pairs(pairs, tag)
        for start in range(0, pairs, 5000):
            services.pairs_insert_bulk(pool=pool, pairs=batch[start:start + 5000])
        vacuum_pairs()
        return pool

    def cleanup(self, *, pools: list[Pool], api_key: ApiKey) -> None:
        ids = [p.pk for p in pools]
        if ids:
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM core_tokenpair WHERE pool_id = ANY(%s)", [ids])
            for pool in pools:
                pool.delete()
        TokenPair.objects.filter(reserved_by=api_key).delete()
        api_key.delete()
        vacuum_pairs()

    # ---- (a) the service call --------------------------------------------------------------------------

    def bench_service(self, *, label: str, claim: Callable[..., Any] | None, threads: int, pairs: int,
                      api_key: ApiKey, pools: list[Pool]) -> None:
        pool = self.scratch_pool(pairs=pairs, pools=pools)
        remaining = [pairs]
        lock = threading.Lock()
        latencies: list[float] = []
        failures: Counter[str] = Counter()
        barrier = threading.Barrier(threads + 1)

        def worker() -> None:
            mine, bad = [], Counter()
            try:
                barrier.wait()
                while True:
                    with lock:
                        if remaining[0] <= 0:
                            break
                        remaining[0] -= 1
                    t0 = time.perf_counter()
                    try:
                        pair, _ = services.reservation_create(pool=pool, api_key=api_key, idempotency_key=None,
                                                              owner_ref=None)
                    except TokenPoolError as exc:
                        bad[f"{exc.status} {exc.code}"] += 1
                        continue
                    if pair.source != "pool":  # a live TOME pair: the pool ran dry
                        bad["201 source=direct"] += 1
                        continue
                    mine.append(time.perf_counter() - t0)
            finally:
                connection.close()
                with lock:
                    latencies.extend(mine)
                    failures.update(bad)

        # reservations.py calls the claim by this name (core/pool/services/claim.py since the split)
        patch = mock.patch.object(services.reservations, "claim_pairs", claim) if claim else nullcontext()
        with patch:
            elapsed = run_timed(worker, threads=threads, barrier=barrier)
        available = TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).count()
        self.report(f"service {label}", threads, len(latencies), elapsed, latencies, failures=failures,
                    dry=available == 0 and bool(failures))

    # ---- (b) HTTP through gunicorn ---------------------------------------------------------------------

    @contextmanager
    def gunicorn(self, *, workers: int, threads: int) -> Iterator[str]:
        port = free_port()
        env = dict(os.environ)
        # Same database as this process (DATABASE_URL or the embedded server), quiet logs.
        env.setdefault("LOG_LEVEL", "WARNING")
        # TOME on a closed port: should a run ever drain its pool, the fallback fails fast (503,
        # reported) instead of quietly measuring live TOME calls.
        env["TOME_BASE_URL"] = f"http://127.0.0.1:{free_port()}"
        env["TOME_MAX_ATTEMPTS"] = "1"
        log_path = ROOT / "var" / "bench_gunicorn.log"
        log_path.parent.mkdir(exist_ok=True)
        env["WEB_WORKERS"], env["WEB_THREADS"] = str(workers), str(threads)
        # The server `make run` and the Dockerfile run (tokenpool.runner.web_command), not stock gthread.
        command = [*web_command(port=port, env=env), "--log-level", "warning"]
        with open(log_path, "ab") as log:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.server_pid = process.pid
        base_url = f"http://127.0.0.1:{port}"
        try:
            if not wait_answering(f"{base_url}/healthz", process=process, ok=lambda status: status == 200):
                raise RuntimeError(f"gunicorn did not start; see {log_path}")
            self.stdout.write(f"gunicorn (TokenPoolThreadWorker) {workers} workers x {threads} threads on {base_url} "
                              f"(pid {process.pid})")
            yield base_url
        finally:
            stop_process(process)

    def bench_http(self, *, base_url: str, raw_key: str, threads: int, pairs: int, pools: list[Pool],
                   loadgen: str, seconds: int) -> None:
        pool = self.scratch_pool(pairs=pairs, pools=pools)
        # Warm every worker's connection and caches on another pool first (not measured).
        warm = self.scratch_pool(pairs=3000, pools=pools)
        if loadgen == "wrk":
            self._run_wrk(base_url, raw_key, warm.name, connections=threads, seconds=2)
            result = self._run_wrk(base_url, raw_key, pool.name, connections=threads, seconds=seconds)
            dry = not TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).exists()
            self._wrk_line("HTTP gunicorn wrk", threads, result, dry=dry)
            return
        self._run_load(base_url, raw_key, warm.name, threads=min(threads, 8), per_thread=200 // min(threads, 8))
        elapsed, latencies, failures = self._run_load(base_url, raw_key, pool.name, threads=threads,
                                                      per_thread=pairs // threads)
        dry = not TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).exists() and bool(failures)
        self.report("HTTP gunicorn py", threads, len(latencies), elapsed, latencies, failures=Counter(failures),
                    dry=dry)

    def bench_healthz(self, *, base_url: str, connections: int, seconds: int) -> None:
        result = self._run_wrk(base_url, "", "", connections=connections, seconds=seconds, path="/healthz",
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

    def _run_wrk(self, base_url: str, raw_key: str, pool: str, *, connections: int, seconds: int,
                 path: str = "/api/v1/reservations", script: str | None = None) -> dict:
        script = (script or WRK_SCRIPT).replace("POOL", pool).replace("KEY", raw_key)
        # The key goes into a private temporary file (mode 0600), never onto a command line.
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
            handle.write(script)
        try:
            out = subprocess.run(
                ["wrk", f"-t{min(connections, 2)}", f"-c{connections}", f"-d{seconds}s", "-s", handle.name,
                 f"{base_url}{path}"],
                capture_output=True, text=True, timeout=seconds + 120, check=True).stdout
        finally:
            os.unlink(handle.name)
        line = next(l for l in out.splitlines() if l.startswith("RESULT "))
        return json.loads(line[len("RESULT "):])

    def _run_load(self, base_url: str, raw_key: str, pool: str, *, threads: int, per_thread: int) -> Any:
        env = {**os.environ, "LOADGEN_API_KEY": raw_key}
        result = subprocess.run(
            [sys.executable, "-m", "core.pool.loadgen", "--base-url", base_url, "--pool", pool,
             "--threads", str(threads), "--per-thread", str(per_thread)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=True)
        data = json.loads(result.stdout.strip().splitlines()[-1])
        return data["elapsed"], data["latencies"], data["failures"]

    # ---- (p) in process ----------------------------------------------------------------------------------

    def bench_inprocess(self, *, requests: int, raw_key: str, pools: list[Pool]) -> None:
        import io
        import types

        from django.test.utils import override_settings
        from django.urls import clear_url_caches, path
        from rest_framework.response import Response

        from core.api.base import ScopedApiView

        class NoopApi(ScopedApiView):
            required_scope = "reserve"

            def post(self, request: Any) -> Response:
                return Response({"ok": True}, status=201)

        import tokenpool.urls

        urls = types.ModuleType("bench_reserve_urls")
        urls.urlpatterns = [path("api/v1/bench-noop", NoopApi.as_view()), *tokenpool.urls.urlpatterns]
        sys.modules[urls.__name__] = urls
        pool = self.scratch_pool(pairs=requests + 100, pools=pools)
        body = json.dumps({"pool": pool.name}).encode()
        from tokenpool.wsgi import SplitApplication

        handler = SplitApplication()  # what gunicorn serves: /api/v1/ runs settings.API_MIDDLEWARE

        def call(path_info: str) -> str:
            status: list[str] = []
            environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path_info, "SERVER_NAME": "127.0.0.1",
                       "SERVER_PORT": "8000", "HTTP_HOST": "127.0.0.1", "REMOTE_ADDR": "127.0.0.1",
                       "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
                       "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/json",
                       "HTTP_AUTHORIZATION": f"Api-Key {raw_key}"}
            result = handler(environ, lambda s, h: status.append(s))
            b"".join(result)
            result.close()
            return status[0]

        with override_settings(ROOT_URLCONF=urls.__name__):
            clear_url_caches()
            try:
                for label, path_info in (("no-op (auth)", "/api/v1/bench-noop"), ("reservation", "/api/v1/reservations")):
                    for _ in range(50):
                        assert call("/api/v1/bench-noop").startswith("201")
                    cpu, wall = time.process_time(), time.perf_counter()
                    statuses = Counter(call(path_info).split(" ", 1)[0] for _ in range(requests))
                    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                    if set(statuses) != {"201"}:
                        # Per-request costs of a mix of answers would describe none of them.
                        self.stdout.write(f"in-process {label:<14} n/a: answers {dict(statuses)} (only 201 counts)")
                        self.refused.append(f"in-process {label}")
                        continue
                    self.stdout.write(f"in-process {label:<14} n={requests:<6} CPU {cpu / requests * 1000:.3f} ms/request"
                                      f"   wall {wall / requests * 1000:.3f} ms/request")
            finally:
                clear_url_caches()
                sys.modules.pop(urls.__name__, None)

    # ---- (r) pgbench ------------------------------------------------------------------------------------

    def bench_pgbench(self, *, threads: int, pairs: int, api_key: ApiKey, pools: list[Pool]) -> None:
        from core.pool import claim_bench

        if pgbench_binary() is None:
            self.stdout.write("pgbench not found; skipped")
            return
        pool = self.scratch_pool(pairs=pairs, pools=pools)
        run = claim_bench.pgbench(None, pgbench_claim_script(pool=pool, api_key=api_key), clients=threads,
                                  transactions=pairs // threads, env=pgbench_env(), latencies=True)
        # The claim returns no row on an empty pool and pgbench still counts it as a transaction.
        latencies = run.latencies
        claimed = TokenPair.objects.filter(pool=pool, status=PairStatus.RESERVED).count()
        failures = Counter({"transactions that claimed nothing": len(latencies) - claimed}) if claimed < len(latencies) else Counter()
        self.report("pgbench claim SQL", threads, len(latencies), run.span if latencies else 1.0, latencies,
                    failures=failures, dry=bool(failures))

    # ---- (c) bulk insert ----------------------------------------------------------------------------------

    def bench_bulk_insert(self, *, rows: int, batch: int, pools: list[Pool]) -> None:
        for label, insert in (("direct COPY (pairs_insert_bulk)", services.pairs_insert_bulk),
                              ("staged COPY + INSERT ... SELECT ON CONFLICT", services._pairs_insert_staged),
                              ("multi-row INSERT ON CONFLICT (1,000 rows/statement)", insert_bulk_multirow)):
            pool = self.scratch_pool(pairs=0, pools=pools)
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
            self.stdout.write(self.style.ERROR(f"{label:<18} threads={threads:<3} n={count:<6} n/a: pool ran dry{failed}"))
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

