"""What the HTTP benchmark commands share (``bench_reserve``, ``bench_http_goals``): TokenPool's
web server started as ``make run`` starts it, wrk and its Lua scripts, scratch pools of fake pairs
and their cleanup, CPU per request from /proc, and pgbench of the service's own claim SQL.

Everything here runs against Django's database (the embedded server or ``DATABASE_URL``); the
scratch pools are named ``bench-<hex>`` and deleted by :func:`cleanup`.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import connection

from bench import claim_bench
from bench.pgbench import PgbenchResult, pgbench
from devtools.edge import caddy_command, caddyfile
from devtools.netutil import child_pids, free_port, stop_process, wait_answering
from devtools.runner import edge_config, web_command
from keys.models import ApiKey
from pool import services
from pool.models import PairStatus, Pool, TokenPair
from tokenpool_tome.client import TokenPair as TomePair

ROOT = Path(__file__).resolve().parents[1]

# wrk's latency histogram mixes every answer, so the statuses are counted per thread (response())
# and summed in done(); a caller reports no percentiles for a run with any non-2xx answer.
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
    'RESULT {"requests": %d, "duration_us": %d, "non2xx": %d, "errors": %d, ' ..
    '"p50": %d, "p95": %d, "p99": %d, "statuses": {%s}}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), table.concat(parts, ", ")))
end
"""
WRK_GET_SCRIPT = WRK_DONE
# POOL and KEY are replaced by run_wrk; COUNT by the caller.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"pool": "POOL"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Api-Key KEY"
""" + WRK_DONE
WRK_BATCH_SCRIPT = WRK_SCRIPT.replace('"POOL"}', '"POOL", "count": COUNT}', 1)


# ---- the web server ------------------------------------------------------------------------------

@dataclass(frozen=True)
class WebServer:
    base_url: str
    pid: int  # the gunicorn master (its children are the workers)


@contextmanager
def served(command: list[str], *, env: dict[str, str], ready_url: str, log_name: str, what: str,
           ok: Callable[[int], bool] = lambda status: True) -> Iterator[subprocess.Popen]:
    """``command`` (a server) in a session of its own, its output appended to ``var/<log_name>``, once
    ``ready_url`` answers a status ``ok`` accepts; stopped on the way out (RuntimeError naming ``what``
    when it never answers)."""
    log_path = ROOT / "var" / log_name
    log_path.parent.mkdir(exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        if not wait_answering(ready_url, process=process, ok=ok):
            raise RuntimeError(f"{what} did not start; see {log_path}")
        yield process
    finally:
        stop_process(process)


@contextmanager
def web_server(*, workers: int, threads: int, say: Callable[[str], None]) -> Iterator[WebServer]:
    """TokenPool's web server (``devtools.runner.web_command``, what `make run` and the Dockerfile
    run) on a free port, on this process's database; stopped on the way out. ``say`` gets the
    one line announcing it."""
    port = free_port()
    env = dict(os.environ)
    env.setdefault("LOG_LEVEL", "WARNING")
    # TOME on a closed port: should a run ever drain its pool, the fallback fails fast (503,
    # reported) instead of quietly measuring live TOME calls.
    env["TOME_BASE_URL"] = f"http://127.0.0.1:{free_port()}"
    env["TOME_MAX_ATTEMPTS"] = "1"
    command = [*web_command(port=port, workers=workers, threads=threads), "--log-level", "warning"]
    base_url = f"http://127.0.0.1:{port}"
    with served(command, env=env, ready_url=f"{base_url}/healthz", log_name="bench_gunicorn.log", what="gunicorn",
                ok=lambda status: status == 200) as process:
        say(f"gunicorn (gthread, deploy/gunicorn.conf.py) {workers} workers x {threads} threads on {base_url} "
            f"(pid {process.pid})")
        yield WebServer(base_url=base_url, pid=process.pid)


@contextmanager
def edge_proxy(*, app_url: str, say: Callable[[str], None]) -> Iterator[str]:
    """The edge proxy exactly as `make run` runs it (devtools/runner.py edge_config: Caddy, plain HTTP
    on loopback) on a free port in front of ``app_url``; its base URL, stopped on the way out."""
    port = free_port()
    var = ROOT / "var" / f"bench-edge-{port}"
    var.mkdir(parents=True, exist_ok=True)
    (var / "log").mkdir(exist_ok=True)
    config = edge_config(port=port, app_port=int(app_url.rsplit(":", 1)[1]), var=var, tls=False)
    (var / "Caddyfile").write_text(caddyfile(config))
    base_url = f"http://127.0.0.1:{port}"
    try:
        with served(caddy_command(var / "Caddyfile"), env=dict(os.environ), ready_url=f"{base_url}/healthz",
                    log_name="bench_caddy.log", what="caddy", ok=lambda status: status == 200) as process:
            say(f"edge proxy (Caddy, as `make run`) on {base_url} in front of {app_url} (pid {process.pid})")
            yield base_url
    finally:
        shutil.rmtree(var, ignore_errors=True)


# ---- wrk -----------------------------------------------------------------------------------------

def run_wrk(*, base_url: str, connections: int, seconds: int, raw_key: str = "", pool: str = "",
            path: str = "/api/v1/reservations", script: str = WRK_SCRIPT) -> dict[str, Any]:
    """One wrk run (``min(connections, 2)`` threads, keep-alive); the ``RESULT`` of ``WRK_DONE``."""
    script = script.replace("POOL", pool).replace("KEY", raw_key)
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
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def wrk_ok(result: dict[str, Any]) -> int:
    """The 2xx answers of a wrk run: its ``non2xx`` is wrk's status-error count, which leaves out
    1xx and 3xx answers."""
    return sum(n for status, n in result["statuses"].items() if 200 <= int(status) < 300)


def wrk_rate(result: dict[str, Any]) -> float:
    """2xx answers per second."""
    return wrk_ok(result) / (result["duration_us"] / 1e6)


# ---- scratch data --------------------------------------------------------------------------------

def bench_api_key() -> tuple[ApiKey, str]:
    """A reserve key no rate limit gets in the way of (deleted by :func:`cleanup`)."""
    return ApiKey.objects.create_key(name=f"bench-{secrets.token_hex(3)}", scopes=["reserve"],
                                     rate_limit_per_second=10_000_000)


def fake_pairs(count: int, tag: str) -> list[Any]:
    return [TomePair(f"b{tag}{i:011d}", f"ext_bench_{tag}_{i:011d}") for i in range(count)]


def vacuum_pairs() -> None:
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE core_tokenpair")


def scratch_pool(*, pairs: int, pools: list[Pool]) -> Pool:
    """A new pool of ``pairs`` fake AVAILABLE pairs (refill off, VACUUM ANALYZEd), appended to
    ``pools`` for :func:`cleanup`."""
    tag = secrets.token_hex(3)
    pool = Pool.objects.create(name=f"bench-{tag}", refill_enabled=False, target_size=max(pairs, 2),
                               low_watermark=1, critical_watermark=0)
    pools.append(pool)
    batch = fake_pairs(pairs, tag)
    for start in range(0, pairs, 5000):
        services.pairs_insert_bulk(pool=pool, pairs=batch[start:start + 5000])
    vacuum_pairs()
    return pool


def cleanup(*, pools: list[Pool], api_key: ApiKey) -> None:
    """Delete the scratch pools, their pairs, whatever ``api_key`` reserved elsewhere, and the key."""
    ids = [p.pk for p in pools]
    if ids:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM core_tokenpair WHERE pool_id = ANY(%s)", [ids])
        for pool in pools:
            pool.delete()
    TokenPair.objects.filter(reserved_by=api_key).delete()
    api_key.delete()
    vacuum_pairs()


def reserved_count(pool: Pool) -> int:
    return TokenPair.objects.filter(pool=pool, status=PairStatus.RESERVED).count()


def ran_dry(pool: Pool) -> bool:
    return not TokenPair.objects.filter(pool=pool, status=PairStatus.AVAILABLE).exists()


# ---- CPU per request -----------------------------------------------------------------------------

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


# ---- pgbench of the service's claim --------------------------------------------------------------

def pgbench_claim_script(*, pool: Pool, api_key: ApiKey, count: int = 1) -> str:
    """The service's own claim SQL for ``count`` pairs of ``pool``, inlined as one pgbench script line;
    from the front of the pool (pgbench keeps no per-process cursor)."""
    params = claim_bench.claim_params(pool.pk, count=count, api_key=api_key.pk, ttl=pool.reservation_ttl)
    sql = services.CLAIM_ONE_SQL if count == 1 else services.CLAIM_EXACTLY_SQL
    with connection.cursor() as cursor:
        statement = cursor.mogrify(sql, params)
    return " ".join(statement.split()) + ";\n"


def pgbench_env() -> dict[str, str]:
    """The environment that points pgbench at Django's database (libpq PG* variables)."""
    sd = connection.settings_dict
    return {**os.environ, "PGHOST": str(sd.get("HOST") or ""), "PGPORT": str(sd.get("PORT") or ""),
            "PGUSER": sd.get("USER") or "", "PGPASSWORD": sd.get("PASSWORD") or "", "PGDATABASE": sd["NAME"]}


def pgbench_claim(*, pool: Pool, api_key: ApiKey, clients: int, transactions: int, count: int = 1,
                  latencies: bool = False) -> PgbenchResult:
    """``transactions`` claims of ``count`` pairs per client from ``pool``, on Django's database,
    through claim_bench's pgbench runner (RuntimeError when there is no pgbench)."""
    return pgbench(None, pgbench_claim_script(pool=pool, api_key=api_key, count=count),
                               clients=clients, transactions=transactions, env=pgbench_env(),
                               latencies=latencies)
