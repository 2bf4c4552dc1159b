"""``manage.py bench_http_goals``: issue 13's HTTP goals measured in one run, side by side.

On scratch pools (deleted afterwards), in this order: pgbench of the single claim and of the batch
claim of ``--batch`` (the exact SQL the service runs, from the front of the pool), then the same two
through HTTP — TokenPool's gunicorn (bench/http.py, as ``bench_reserve`` starts it), driven by wrk
at ``--connections``
(``POST /api/v1/reservations`` and ``POST /api/v1/reservations/batch``). Prints each rate (pairs/s for
the batches), p99, and the three ratios of the goals: HTTP reserve / pgbench claim (goal ≥ 0.25),
p99 at 16 connections (goal ≤ 25 ms), HTTP batch / pgbench batch in pairs/s (goal ≥ 0.5).

Each round also measures TokenPool's reservations through the edge proxy exactly as `make run` serves
them (Caddy in front of the same gunicorn, bench/http.py ``edge_proxy``), right after the direct run, and
prints edge / naive peer served directly (issue 19's goal ≥ 0.8).

Each round also measures issue 13 §4's naive peer (``bench/naive_peer``: Django + DRF, an API-key
SELECT per request, SELECT … FOR UPDATE SKIP LOCKED + UPDATE in ``atomic``, a slim four-index pairs
table in its own schema, stock gunicorn gthread ``--workers`` × ``--worker-threads``) with the same wrk
script and connections, back to back with TokenPool's HTTP reserve run (the order alternates from
round to round so neither always runs on the warmer machine), and prints TokenPool / peer (goal ≥ 1.5).
``--no-peer`` skips it. The last line is ``RESULT {json}`` with every number of every round.
Repeat ``--rounds`` times to see the spread on a shared machine.

``--sweep 2x2,2x4,3x4`` instead measures only single reservations through the whole edge (Caddy as
`make run` serves it, in front of gunicorn ``workers x threads``), one size after the other, each on
a fresh scratch pool after a 2 s warm-up: r/s, p50/p95/p99 and the load average, the numbers that
chose deploy/gunicorn.conf.py's counts (docs/benchmarks.md "Edge / worker sweep").
"""
from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from bench.http import (
    WRK_BATCH_SCRIPT,
    bench_api_key,
    cleanup,
    cpu_per_request,
    edge_proxy,
    pgbench_claim,
    reserved_count,
    run_wrk,
    scratch_pool,
    served,
    web_server,
    wrk_ok,
    wrk_rate,
)
from bench.naive_peer import schema as peer_schema
from devtools.netutil import connections_per_child, free_port
from keys.models import ApiKey
from pool.models import Pool

PEER_POOL = "bench"
SPREAD_SAMPLE_SECONDS = 1.0  # into a wrk run: its connections are all open and kept alive by then
PEER_GOAL = 1.5  # issue 13 §4: TokenPool's HTTP reserve rate ≥ 1.5× the naive peer's
EDGE_GOAL = 0.8  # issue 19: through the edge proxy ≥ 0.8× the naive peer served directly


@dataclass(frozen=True)
class Peer:
    """A running naive peer: where it listens, its schema, and the raw key wrk sends."""

    base_url: str
    schema: str
    raw_key: str
    pid: int  # the peer's gunicorn master


@contextmanager
def connection_spread(*, base_url: str, server_pid: int) -> Iterator[list[int]]:
    """How many of the run's kept-alive connections each web worker holds (sorted), sampled
    ``SPREAD_SAMPLE_SECONDS`` into the run: a process holding most of them serves them on one GIL
    (docs/benchmarks.md, "Web server": why the spread is measured)."""
    port = int(base_url.rsplit(":", 1)[1])
    spread: list[int] = []
    timer = threading.Timer(SPREAD_SAMPLE_SECONDS, lambda: spread.extend(
        sorted(connections_per_child(parent_pid=server_pid, port=port).values())))
    timer.start()
    try:
        yield spread
    finally:
        timer.cancel()
        timer.join()


def measured_wrk(*, base_url: str, server_pid: int, raw_key: str, pool: str, connections: int, seconds: int,
                 database: str) -> tuple[dict[str, Any], dict[str, float], list[int]]:
    """One reservation run of wrk against a server, with the CPU its workers and the database's
    backends used meanwhile (:func:`cpu_per_request`) and its :func:`connection_spread`."""
    with cpu_per_request(server_pid=server_pid, database=database) as cpu, \
            connection_spread(base_url=base_url, server_pid=server_pid) as spread:
        result = run_wrk(base_url=base_url, raw_key=raw_key, pool=pool, connections=connections, seconds=seconds)
    return result, cpu, spread


class Command(BaseCommand):
    help = "Issue 13's HTTP goals: HTTP reserve and batch vs pgbench of the same claims, in one run."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--connections", type=int, default=16)
        parser.add_argument("--seconds", type=int, default=5, help="Duration of each wrk run.")
        parser.add_argument("--pgbench-pairs", type=int, default=20000)
        parser.add_argument("--batch", type=int, default=100)
        parser.add_argument("--rounds", type=int, default=1)
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--worker-threads", type=int, default=8)  # deploy/gunicorn.conf.py
        parser.add_argument("--no-peer", action="store_true", help="Skip the naive peer (issue 13 §4).")
        parser.add_argument("--sweep", default="",
                            help="Comma-separated WORKERSxTHREADS sizes: only reservations through the edge, per size.")

    def handle(self, *args: Any, **opts: Any) -> None:
        # SIGTERM (a timeout in `make bench`) → SystemExit, so the finally blocks stop both gunicorns
        # (their own sessions: nobody else would) and drop the scratch pools and the peer's schema.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        if opts["sweep"]:
            self.sweep(sizes=_sizes(opts["sweep"]), connections=opts["connections"], seconds=opts["seconds"])
            return
        key, raw_key = bench_api_key()
        pools: list[Pool] = []
        conns, seconds, batch = opts["connections"], opts["seconds"], opts["batch"]
        # Enough pairs that no HTTP run drains its pool (a drained pool would measure TOME fallbacks).
        http_pairs = 6000 * seconds
        rounds: list[dict[str, Any]] = []
        refused: list[str] = []
        try:
            with ExitStack() as stack:
                server = stack.enter_context(web_server(workers=opts["workers"], threads=opts["worker_threads"],
                                                        say=self.stdout.write))
                base_url = server.base_url
                edge_url = stack.enter_context(edge_proxy(app_url=base_url, say=self.stdout.write))
                peer = None if opts["no_peer"] else stack.enter_context(
                    self.naive_peer(workers=opts["workers"], threads=opts["worker_threads"]))
                warm = scratch_pool(pairs=4000, pools=pools)
                run_wrk(base_url=base_url, raw_key=raw_key, pool=warm.name, connections=conns, seconds=2)
                run_wrk(base_url=edge_url, raw_key=raw_key, pool=warm.name, connections=conns, seconds=2)
                if peer is not None:
                    self.peer_fill(peer, pairs=4000)
                    run_wrk(base_url=peer.base_url, raw_key=peer.raw_key, pool=PEER_POOL, connections=conns, seconds=2)
                for n in range(1, opts["rounds"] + 1):
                    one = self.pgbench(count=1, pairs=opts["pgbench_pairs"], conns=conns, key=key, pools=pools)
                    many = self.pgbench(count=batch, pairs=opts["pgbench_pairs"] * 5, conns=conns, key=key,
                                        pools=pools)
                    pool = scratch_pool(pairs=http_pairs, pools=pools)
                    if peer is not None:
                        self.peer_fill(peer, pairs=http_pairs)
                    # Back to back, alternating which goes first.
                    database = connection.settings_dict["NAME"]
                    peer_result, peer_cpu, peer_spread = None, {}, []
                    if peer is not None and n % 2 == 1:
                        peer_result, peer_cpu, peer_spread = measured_wrk(
                            base_url=peer.base_url, server_pid=peer.pid, raw_key=peer.raw_key, pool=PEER_POOL,
                            connections=conns, seconds=seconds, database=database)
                    single, cpu, spread = measured_wrk(
                        base_url=base_url, server_pid=server.pid, raw_key=raw_key, pool=pool.name,
                        connections=conns, seconds=seconds, database=database)
                    # The same reservations through the edge proxy, as `make run` and docker serve them.
                    edge_pool = scratch_pool(pairs=http_pairs, pools=pools)
                    edged = run_wrk(base_url=edge_url, raw_key=raw_key, pool=edge_pool.name, connections=conns,
                                    seconds=seconds)
                    if peer is not None and n % 2 == 0:
                        peer_result, peer_cpu, peer_spread = measured_wrk(
                            base_url=peer.base_url, server_pid=peer.pid, raw_key=peer.raw_key, pool=PEER_POOL,
                            connections=conns, seconds=seconds, database=database)
                    pool = scratch_pool(pairs=http_pairs * 10, pools=pools)
                    batched = run_wrk(base_url=base_url, raw_key=raw_key, pool=pool.name, connections=conns,
                                      seconds=seconds, path="/api/v1/reservations/batch",
                                      script=WRK_BATCH_SCRIPT.replace("COUNT", str(batch)))
                    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
                    http_rate = wrk_rate(single)
                    edge_rate = wrk_rate(edged)
                    batch_rate = wrk_rate(batched) * batch
                    row: dict[str, Any] = {
                        "round": n, "load": load, "pgbench_claim_per_s": round(one),
                        "pgbench_batch_pairs_per_s": round(many),
                        "http_reserve_per_s": round(http_rate), "http_reserve_p99_ms": self.p99(single),
                        "http_reserve_statuses": single["statuses"], "http_batch_pairs_per_s": round(batch_rate),
                        "http_batch_p99_ms": self.p99(batched), "http_batch_statuses": batched["statuses"],
                        "edge_reserve_per_s": round(edge_rate), "edge_reserve_p99_ms": self.p99(edged),
                        "edge_reserve_statuses": edged["statuses"],
                        "http_reserve_cpu_ms": self.cpu_ms(cpu, single), "http_reserve_connections_per_worker": spread,
                        "http_vs_pgbench_claim": round(http_rate / one, 3),
                        "http_batch_vs_pgbench_batch": round(batch_rate / many, 3)}
                    self.stdout.write(
                        f"round {n} (load {load}): pgbench claim {one:,.0f}/s, pgbench batch of {batch} "
                        f"{many:,.0f} pairs/s; HTTP reserve {http_rate:,.0f}/s p99 {self.p99_text(single)} "
                        f"({single['statuses']}), HTTP batch of {batch} {batch_rate:,.0f} pairs/s "
                        f"p99 {self.p99_text(batched)} ({batched['statuses']}); CPU per reservation "
                        f"{self.cpu_text(cpu, single)}; connections per worker {spread}; through the edge proxy "
                        f"{edge_rate:,.0f}/s p99 {self.p99_text(edged)} ({edged['statuses']})")
                    goals = (f"round {n} goals: HTTP/pgbench claim {http_rate / one:.2f} (>= 0.25), p99 at {conns} "
                             f"{self.p99_text(single)} (<= 25), HTTP batch/pgbench batch {batch_rate / many:.2f} "
                             f"(>= 0.5)")
                    if peer is not None and peer_result is not None:
                        peer_rate = wrk_rate(peer_result)
                        dry = self.peer_available(peer) == 0
                        order = "before" if n % 2 == 1 else "after"
                        self.stdout.write(
                            f"round {n} naive peer (gunicorn gthread {opts['workers']}x{opts['worker_threads']}, run "
                            f"{order} TokenPool's): {'n/a: pool ran dry' if dry else f'{peer_rate:,.0f}/s'} "
                            f"p99 {self.p99_text(peer_result)} ({peer_result['statuses']}); CPU per reservation "
                            f"{self.cpu_text(peer_cpu, peer_result)}; connections per worker {peer_spread}")
                        row.update({"peer_reserve_per_s": None if dry else round(peer_rate),
                                    "peer_reserve_p99_ms": self.p99(peer_result),
                                    "peer_statuses": peer_result["statuses"], "peer_ran": order,
                                    "peer_reserve_cpu_ms": self.cpu_ms(peer_cpu, peer_result),
                                    "peer_connections_per_worker": peer_spread,
                                    "http_vs_peer": None if dry or not peer_rate else round(http_rate / peer_rate, 3),
                                    "edge_vs_peer": None if dry or not peer_rate else round(edge_rate / peer_rate, 3)})
                        if dry or not peer_rate:
                            refused.append(f"round {n} naive peer")
                            goals += ", TokenPool/naive peer n/a"
                        else:
                            goals += (f", TokenPool/naive peer {http_rate / peer_rate:.2f} (>= {PEER_GOAL}), through "
                                      f"the edge/naive peer direct {edge_rate / peer_rate:.2f} (>= {EDGE_GOAL})")
                    self.stdout.write(goals)
                    rounds.append(row)
        finally:
            cleanup(pools=pools, api_key=key)
        self.stdout.write("RESULT " + json.dumps({
            "connections": conns, "seconds": seconds, "batch": batch, "workers": opts["workers"],
            "worker_threads": opts["worker_threads"], "peer_goal": None if opts["no_peer"] else PEER_GOAL,
            "rounds": rounds}))
        if refused:
            raise CommandError(f"no rate for {'; '.join(refused)}: its pool ran dry or nothing answered 2xx")

    def sweep(self, *, sizes: list[tuple[int, int]], connections: int, seconds: int) -> None:
        """Single reservations through the edge proxy for each gunicorn size, one table row each."""
        key, raw_key = bench_api_key()
        pools: list[Pool] = []
        rows: list[dict[str, Any]] = []
        header = "".join(f"{name:>7} " for name in ("r/s", "p50 ms", "p95 ms", "p99 ms"))
        self.stdout.write(f"{'workers x threads':>17} {header} load  statuses")
        try:
            for workers, threads in sizes:
                with web_server(workers=workers, threads=threads, say=lambda line: None) as server, \
                        edge_proxy(app_url=server.base_url, say=lambda line: None) as edge_url:
                    warm = scratch_pool(pairs=4000, pools=pools)
                    run_wrk(base_url=edge_url, raw_key=raw_key, pool=warm.name, connections=connections, seconds=2)
                    pool = scratch_pool(pairs=6000 * seconds, pools=pools)
                    result = run_wrk(base_url=edge_url, raw_key=raw_key, pool=pool.name, connections=connections,
                                     seconds=seconds)
                load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
                clean = self.p99(result) is not None
                row = {"workers": workers, "threads": threads, "per_s": round(wrk_rate(result)),
                       "p50_ms": round(result["p50"] / 1000, 2) if clean else None,
                       "p95_ms": round(result["p95"] / 1000, 2) if clean else None,
                       "p99_ms": self.p99(result), "load": load, "statuses": result["statuses"]}
                rows.append(row)
                self.stdout.write(f"{f'{workers} x {threads}':>17} {row['per_s']:>7,} {_ms(row['p50_ms'])} "
                                  f"{_ms(row['p95_ms'])} {_ms(row['p99_ms'])}  {load}  {result['statuses']}")
        finally:
            cleanup(pools=pools, api_key=key)
        self.stdout.write("RESULT " + json.dumps({"connections": connections, "seconds": seconds, "sweep": rows}))

    @classmethod
    def cpu_ms(cls, cpu: dict[str, float], result: dict) -> dict[str, float] | None:
        """CPU ms per 2xx answer: the web server's workers and the backends connected to the database
        (PostgreSQL's shared processes — WAL writer, io workers, checkpointer — are not counted)."""
        answers = wrk_ok(result)
        if not answers or not cpu:
            return None
        return {group: round(seconds * 1000 / answers, 3) for group, seconds in cpu.items()}

    @classmethod
    def cpu_text(cls, cpu: dict[str, float], result: dict) -> str:
        per = cls.cpu_ms(cpu, result)
        return "n/a" if per is None else f"web {per['web']:.2f} ms + its database connections {per['postgres']:.2f} ms"

    @staticmethod
    def p99(result: dict) -> float | None:
        """wrk's p99 in ms, or None when the run had any non-2xx answer or socket error (wrk's
        histogram then mixes them in)."""
        clean = all(200 <= int(status) < 300 for status in result["statuses"]) and not result["errors"]
        return round(result["p99"] / 1000, 2) if clean else None

    def p99_text(self, result: dict) -> str:
        p99 = self.p99(result)
        return "n/a (non-2xx answers)" if p99 is None else f"{p99:.1f} ms"

    # ---- the naive peer (issue 13 §4) -------------------------------------------------------------------

    @contextmanager
    def naive_peer(self, *, workers: int, threads: int) -> Iterator[Peer]:
        """Create the peer's schema in this database (dropping those of killed runs first, see
        bench/naive_peer/schema.py), start it under stock gunicorn gthread on a free port, and on
        the way out stop it and drop the schema."""
        database_url = peer_schema.database_url(connection.settings_dict)
        with peer_schema.owned_schema(database_url=database_url, on_orphans=lambda names: self.stdout.write(
                f"naive peer: dropped {len(names)} schema(s) of killed runs: {', '.join(names)}")) as name:
            with connection.cursor() as cursor:
                raw_key = peer_schema.create_api_key(cursor, schema=name)
            env = peer_schema.gunicorn_env(database_url=database_url, schema=name)
            env["LOG_LEVEL"] = "WARNING"
            port = free_port()
            base_url = f"http://127.0.0.1:{port}"
            # Ready once it answers HTTP at all (a GET without a key: 401, no database involved).
            with served(peer_schema.gunicorn_command(port=port, workers=workers, threads=threads), env=env,
                        ready_url=f"{base_url}/api/v1/reservations", log_name="bench_naive_peer.log",
                        what="the naive peer") as process:
                self.stdout.write(f"naive peer: stock gunicorn gthread {workers} workers x {threads} threads on "
                                  f"{base_url} (pid {process.pid}), schema {name}")
                yield Peer(base_url=base_url, schema=name, raw_key=raw_key, pid=process.pid)

    @staticmethod
    def peer_fill(peer: Peer, *, pairs: int) -> None:
        with connection.cursor() as cursor:
            peer_schema.fill_pairs(cursor, schema=peer.schema, pool=PEER_POOL, count=pairs)

    @staticmethod
    def peer_available(peer: Peer) -> int:
        with connection.cursor() as cursor:
            return peer_schema.count_pairs(cursor, schema=peer.schema, status="AVAILABLE")

    @staticmethod
    def pgbench(*, count: int, pairs: int, conns: int, key: ApiKey, pools: list[Pool]) -> float:
        """Pairs per second claimed by pgbench running the service's claim SQL for ``count`` pairs."""
        pool = scratch_pool(pairs=pairs, pools=pools)
        # 80 % of the pool: every transaction claims (an empty pool would be counted too).
        per_client = max(1, int(pairs * 0.8) // count // conns)
        try:
            run = pgbench_claim(pool=pool, api_key=key, clients=conns, transactions=per_client, count=count)
        except RuntimeError as exc:
            raise CommandError(str(exc)) from exc
        claimed = reserved_count(pool)
        assert claimed == per_client * conns * count, (claimed, per_client, conns, count)
        return run.tps * count


def _sizes(text: str) -> list[tuple[int, int]]:
    try:
        return [(int(w), int(t)) for w, t in (size.lower().split("x") for size in text.split(","))]
    except ValueError as exc:
        raise CommandError(f"--sweep: expected WORKERSxTHREADS,…, got {text!r}") from exc


def _ms(value: float | None) -> str:
    return f"{'n/a':>7}" if value is None else f"{value:>7.1f}"


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)
