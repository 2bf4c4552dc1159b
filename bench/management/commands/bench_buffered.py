"""``manage.py bench_buffered``: issue 22's buffered client measured beside the unbuffered one.

Starts TokenPool's gunicorn (bench/http.py, as ``bench_http_goals`` does) on scratch pools (deleted
afterwards) and runs card creation through ``TokenPoolClient`` in separate processes
(``bench/buffered.py``): unbuffered (reserve + confirm, one request each) with ``--threads`` threads
in one process, then buffered (``buffer=True``: reserve from the local buffer + ``confirm(wait=False)``)
with ``--threads`` threads in one process and with 2 processes × ``--threads``/2. Each measures
``--seconds`` after ``--warmup`` seconds (the buffered ``reserve()`` p99 "once warm"). Then pgbench of
the single-pair claim (the service's SQL) at ``--threads`` clients, for the pairs/s ratio.

Prints cards/s, reserve() p50/p99 per process, errors and the clients' waste; the last line is
``RESULT {json}``. Needs the embedded PostgreSQL (or DATABASE_URL), gunicorn and pgbench.

``--outage SECONDS`` adds issue 22's outage run (bench/buffered_outage.py): one buffered client
at ``--outage-rate`` cards/s (default 10x the plan's 0.58/s) with the TOME fallback pointed at a
TOME emulator; after ``--outage-warmup`` s the server is stopped (SIGSTOP) for SECONDS, and the
emulator's own counters say when the first TOME call came.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from bench.buffered_outage import outage_run
from bench.http import (
    ROOT,
    bench_api_key,
    cleanup,
    pgbench_claim,
    reserved_count,
    run_wrk,
    scratch_pool,
    web_server,
    wrk_rate,
)
from bench.management.commands.bench_http_goals import PEER_POOL
from bench.management.commands.bench_http_goals import Command as HttpGoals
from pool.models import Pool


class Command(BaseCommand):
    help = "Buffered TokenPoolClient vs unbuffered: cards/s and reserve() p50/p99 (issue 22)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--threads", type=int, default=16)
        parser.add_argument("--seconds", type=float, default=5.0)
        parser.add_argument("--warmup", type=float, default=2.0)
        parser.add_argument("--pairs", type=int, default=150_000, help="Pairs of each buffered run's scratch pool.")
        parser.add_argument("--pgbench-pairs", type=int, default=20_000)
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--worker-threads", type=int, default=4)
        parser.add_argument("--layouts", default="naive,unbuffered,1x,2x",
                            help="Which runs, comma-separated: naive (the naive Django + DRF peer's single "
                                 "reservations, wrk at --threads connections), unbuffered (1 x --threads), 1x "
                                 "(buffered, 1 x --threads), 2x (buffered, 2 x --threads/2), none.")
        parser.add_argument("--outage", type=float, default=0.0,
                            help="Seconds TokenPool is stopped (0: no outage run).")
        parser.add_argument("--outage-rate", type=float, default=5.8, help="Cards/s of the outage run (10x the plan).")
        parser.add_argument("--outage-warmup", type=float, default=65.0,
                            help="Seconds before the stop (the demand window is 60 s: the buffer reaches its size).")

    def handle(self, *args: Any, **opts: Any) -> None:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        key, raw_key = bench_api_key()
        pools: list[Pool] = []
        threads = opts["threads"]
        runs: dict[str, Any] = {}
        with tempfile.NamedTemporaryFile("w", suffix=".key", delete=False) as handle:
            handle.write(raw_key)  # mode 0600: the key never goes onto a command line
        try:
            wanted = set(opts["layouts"].split(","))
            if "naive" in wanted:
                runs["naive_peer_reservations_per_s"] = self.naive(opts)
            with web_server(workers=opts["workers"], threads=opts["worker_threads"], say=self.stdout.write) as server:
                layouts = [("unbuffered", f"unbuffered 1x{threads}", False, 1, threads, opts["pairs"] // 5),
                           ("1x", f"buffered 1x{threads}", True, 1, threads, opts["pairs"]),
                           ("2x", f"buffered 2x{threads // 2}", True, 2, threads // 2, opts["pairs"])]
                for _, label, buffered, processes, per_process, pairs in (x for x in layouts if x[0] in wanted):
                    pool = scratch_pool(pairs=pairs, pools=pools)
                    runs[label] = self.phase(server.base_url, handle.name, pool, buffered=buffered,
                                             processes=processes, threads=per_process, opts=opts)
                    runs[label]["pool_ran_dry"] = reserved_count(pool) >= pairs
                    self.say(label, runs[label])
                if opts["outage"] > 0:
                    pool = scratch_pool(pairs=max(5000, int(opts["outage_rate"] * 600)), pools=pools)
                    runs["outage"] = outage_run(server=server, key_file=handle.name, pool=pool.name,
                                                rate=opts["outage_rate"], warmup=opts["outage_warmup"],
                                                outage=opts["outage"], say=self.stdout.write)
            pg_pool = scratch_pool(pairs=opts["pgbench_pairs"], pools=pools)
            per_client = max(1, int(opts["pgbench_pairs"] * 0.8) // threads)
            try:
                pg = pgbench_claim(pool=pg_pool, api_key=key, clients=threads, transactions=per_client)
            except RuntimeError as exc:
                raise CommandError(str(exc)) from exc
            runs["pgbench_single_claim_per_s"] = round(pg.tps, 1)
            self.stdout.write(f"pgbench single-pair claim, {threads} clients: {pg.tps:,.0f} pairs/s")
            peer = runs.get("naive_peer_reservations_per_s")
            for label in (k for k in runs if k.startswith("buffered")):
                ratio = runs[label]["cards_per_s"] / pg.tps if pg.tps else 0.0
                runs[label]["vs_pgbench_single_claim"] = round(ratio, 2)
                versus = ""
                if peer:
                    runs[label]["vs_naive_peer"] = round(runs[label]["cards_per_s"] / peer, 2)
                    versus = f", {runs[label]['vs_naive_peer']:.2f}x the naive peer's single reservations"
                self.stdout.write(f"{label}: {ratio:.2f}x pgbench of the single-pair claim{versus}")
        finally:
            os.unlink(handle.name)
            cleanup(pools=pools, api_key=key)
        self.stdout.write("RESULT " + json.dumps(runs))

    def naive(self, opts: dict[str, Any]) -> float:
        """The naive Django + DRF peer's single reservations/s (bench_http_goals' peer, same gunicorn
        sizes), wrk with --threads connections for --seconds, after a 2 s warm-up."""
        goals = HttpGoals()
        seconds, conns = max(1, int(opts["seconds"])), opts["threads"]
        with goals.naive_peer(workers=opts["workers"], threads=opts["worker_threads"]) as peer:
            goals.peer_fill(peer, pairs=opts["pairs"] // 5 + 4000)
            run_wrk(base_url=peer.base_url, raw_key=peer.raw_key, pool=PEER_POOL, connections=conns, seconds=2)
            result = run_wrk(base_url=peer.base_url, raw_key=peer.raw_key, pool=PEER_POOL, connections=conns,
                             seconds=seconds)
            dry = goals.peer_available(peer) == 0
        rate = wrk_rate(result)
        self.stdout.write(f"naive peer (Django + DRF, gunicorn gthread {opts['workers']}x{opts['worker_threads']}), "
                          f"single reservations at {conns} connections: {rate:,.0f}/s ({result['statuses']})"
                          + (" — PEER POOL RAN DRY, raise --pairs" if dry else ""))
        return round(rate, 1)

    def phase(self, base_url: str, key_file: str, pool: Pool, *, buffered: bool, processes: int, threads: int,
              opts: dict[str, Any]) -> dict[str, Any]:
        command = [sys.executable, "-m", "bench.buffered", "--base-url", base_url, "--key-file", key_file,
                   "--pool", pool.name, "--threads", str(threads), "--seconds", str(opts["seconds"]),
                   "--warmup", str(opts["warmup"]), *(["--buffered"] if buffered else [])]
        children = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
        results = []
        for child in children:
            out, _ = child.communicate(timeout=opts["seconds"] + opts["warmup"] + 300)
            line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
            if child.returncode != 0 or line is None:
                raise CommandError(f"bench.buffered exited {child.returncode}")
            results.append(json.loads(line[len("RESULT "):]))
        cards = sum(r["cards"] for r in results)
        close_seconds = max(r["close_seconds"] for r in results)
        # Over the window plus close(): the queued confirmations it sends are part of the cards' cost.
        return {"processes": processes, "threads": threads, "cards": cards,
                "cards_per_s": round(cards / (opts["seconds"] + close_seconds), 1),
                "errors": sum(r["errors"] for r in results),
                "reserve_p50_ms": [r["reserve_p50_ms"] for r in results],
                "reserve_p99_ms": [r["reserve_p99_ms"] for r in results],
                "waste": sum(r["metrics"]["waste"] for r in results),
                "close_seconds": close_seconds,
                "released_at_close": sum(r["metrics"]["released"] for r in results),
                "confirms_lost": sum(r["metrics"]["confirms_lost"] for r in results)}

    def say(self, label: str, run: dict[str, Any]) -> None:
        self.stdout.write(
            f"{label}: {run['cards_per_s']:,.0f} cards/s (reserve + confirm, confirmed by the end of close()), "
            f"reserve() p50 {run['reserve_p50_ms']} ms "
            f"p99 {run['reserve_p99_ms']} ms per process, errors {run['errors']}, waste {run['waste']}, "
            f"released at close {run['released_at_close']}, confirms lost {run['confirms_lost']}, "
            f"close() {run['close_seconds']} s"
            + (" — POOL RAN DRY, raise --pairs" if run["pool_ran_dry"] else ""))


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(143)
