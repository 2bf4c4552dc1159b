"""``manage.py bench_http_goals``: issue 13's HTTP goals measured in one run, side by side.

On scratch pools (deleted afterwards), in this order: pgbench of the single claim and of the batch
claim of ``--batch`` (the exact SQL the service runs, from the front of the pool), then the same two
through HTTP — gunicorn started as ``bench_reserve`` starts it, driven by wrk at ``--connections``
(``POST /api/v1/reservations`` and ``POST /api/v1/reservations/batch``). Prints each rate (pairs/s for
the batches), p99, and the three ratios of the goals: HTTP reserve / pgbench claim (goal ≥ 0.25),
p99 at 16 connections (goal ≤ 25 ms), HTTP batch / pgbench batch in pairs/s (goal ≥ 0.5).
Repeat ``--rounds`` times to see the spread on a shared machine.
"""
from __future__ import annotations

import secrets
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from core.api.models import ApiKey
from core.management.commands.bench_reserve import WRK_DONE, pgbench_binary, pgbench_env
from core.management.commands.bench_reserve import Command as ReserveBench
from core.pool import services
from core.pool.models import PairStatus, Pool, TokenPair

WRK_BATCH_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"pool": "POOL", "count": COUNT}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Api-Key KEY"
""" + WRK_DONE


class Command(BaseCommand):
    help = "Issue 13's HTTP goals: HTTP reserve and batch vs pgbench of the same claims, in one run."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--connections", type=int, default=16)
        parser.add_argument("--seconds", type=int, default=5, help="Duration of each wrk run.")
        parser.add_argument("--pgbench-pairs", type=int, default=20000)
        parser.add_argument("--batch", type=int, default=100)
        parser.add_argument("--rounds", type=int, default=1)
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--worker-threads", type=int, default=4)

    def handle(self, *args: Any, **opts: Any) -> None:
        bench = ReserveBench(stdout=self.stdout, stderr=self.stderr)
        bench.refused = []
        key, raw_key = ApiKey.objects.create_key(name=f"bench-{secrets.token_hex(3)}", scopes=["reserve"],
                                                 rate_limit_per_second=10_000_000)
        pools: list[Pool] = []
        conns, seconds, batch = opts["connections"], opts["seconds"], opts["batch"]
        # Enough pairs that no HTTP run drains its pool (a drained pool would measure TOME fallbacks).
        http_pairs = 6000 * seconds
        try:
            with bench.gunicorn(workers=opts["workers"], threads=opts["worker_threads"]) as base_url:
                warm = bench.scratch_pool(pairs=4000, pools=pools)
                bench._run_wrk(base_url, raw_key, warm.name, connections=conns, seconds=2)
                for n in range(1, opts["rounds"] + 1):
                    one = self.pgbench(bench, count=1, pairs=opts["pgbench_pairs"], conns=conns, key=key, pools=pools)
                    many = self.pgbench(bench, count=batch, pairs=opts["pgbench_pairs"] * 5, conns=conns, key=key,
                                        pools=pools)
                    pool = bench.scratch_pool(pairs=http_pairs, pools=pools)
                    single = bench._run_wrk(base_url, raw_key, pool.name, connections=conns, seconds=seconds)
                    pool = bench.scratch_pool(pairs=http_pairs * 10, pools=pools)
                    batched = bench._run_wrk(base_url, raw_key, pool.name, connections=conns, seconds=seconds,
                                             path="/api/v1/reservations/batch",
                                             script=WRK_BATCH_SCRIPT.replace("COUNT", str(batch)))
                    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
                    http_rate = self.rate(single)
                    batch_rate = self.rate(batched) * batch
                    self.stdout.write(
                        f"round {n} (load {load}): pgbench claim {one:,.0f}/s, pgbench batch of {batch} "
                        f"{many:,.0f} pairs/s; HTTP reserve {http_rate:,.0f}/s p99 {single['p99'] / 1000:.1f} ms "
                        f"({single['statuses']}), HTTP batch of {batch} {batch_rate:,.0f} pairs/s "
                        f"p99 {batched['p99'] / 1000:.1f} ms ({batched['statuses']})")
                    self.stdout.write(
                        f"round {n} goals: HTTP/pgbench claim {http_rate / one:.2f} (>= 0.25), p99 at {conns} "
                        f"{single['p99'] / 1000:.1f} ms (<= 25), HTTP batch/pgbench batch {batch_rate / many:.2f} "
                        f"(>= 0.5)")
        finally:
            bench.cleanup(pools=pools, api_key=key)

    @staticmethod
    def rate(result: dict) -> float:
        ok = sum(n for status, n in result["statuses"].items() if 200 <= int(status) < 300)
        return ok / (result["duration_us"] / 1e6)

    def pgbench(self, bench: ReserveBench, *, count: int, pairs: int, conns: int, key: ApiKey,
                pools: list[Pool]) -> float:
        """Pairs per second claimed by pgbench running the service's claim SQL for ``count`` pairs."""
        binary = pgbench_binary()
        if binary is None:
            raise CommandError("pgbench not found (neither on PATH nor in the embedded PostgreSQL)")
        pool = bench.scratch_pool(pairs=pairs, pools=pools)
        params = {"pool": pool.pk, "api_key": key.pk, "owner_ref": None, "idempotency_key": None,
                  "fingerprint": None, "ttl": pool.reservation_ttl, "idempotency_index": None, "after": 0,
                  "count": count}
        sql = services.claim._CLAIM_ONE_SQL if count == 1 else services.claim._CLAIM_EXACTLY_SQL
        with connection.cursor() as cursor:
            statement = cursor.mogrify(sql, params)
        env = pgbench_env()
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "claim.sql"
            script.write_text(" ".join(statement.split()) + ";\n")
            # 80 % of the pool: every transaction claims (an empty pool would be counted too).
            per_client = max(1, int(pairs * 0.8) // count // conns)
            out = subprocess.run([binary, "-n", "-f", str(script), "-c", str(conns), "-j", str(min(conns, 2)),
                                  "-t", str(per_client)], cwd=tmp, env=env, capture_output=True, text=True,
                                 check=True, timeout=900).stdout
        tps = float(next(line for line in out.splitlines() if line.startswith("tps =")).split()[2])
        claimed = TokenPair.objects.filter(pool=pool, status=PairStatus.RESERVED).count()
        assert claimed == per_client * conns * count, (claimed, per_client, conns, count)
        return tps * count
