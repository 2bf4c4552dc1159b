"""The reservation claim at any table shape (docs/benchmarks.md, "Claim at any table shape").

    python manage.py bench_claim                                  # every phase at the issue's sizes
    python manage.py bench_claim --phases shapes,indexes --seconds 8
    python manage.py bench_claim --phases snapshot --snapshot-seconds 60
    python manage.py bench_claim --phases history --history-rows 10000000

Phases (each in scratch databases ``bench_claim`` / ``bench_claim_history``, migrated with this
project's migrations, in a PostgreSQL cluster of the benchmark's own under ``var/bench_claim_pg``
unless ``--on-database-url-server``; see bench/claim_bench.py):

- ``shapes``: the planner cliff. For each shape (the issue's: a 47k-row pool in front of a pool whose
  first 200k pairs were issued and which then got 700k fresh ones, measured just after that bulk
  insert and again after ANALYZE; and three pools with history in front and AVAILABLE at 1/10/50/90 %
  of the table) the pick's plan (index, rows filtered, ms) and pgbench of the old claim ("naive")
  and ours, side by side, 8 clients, ``--seconds`` each. Autovacuum is off on the scratch table during
  this phase so the statistics stay those of the shape.
- ``snapshot``: held-back VACUUM. 1M USED + 1.2M AVAILABLE pairs (2.2M rows); per variant (single and
  batch-of-100 claims, from the front vs from the cursor) the undisturbed rate, then the rate while a
  REPEATABLE READ transaction holds its snapshot for ``--snapshot-seconds`` (pgbench progress every
  10 s). Autovacuum on.
- ``indexes``: the claim with and without the two ``_like`` indexes migration 0013 dropped, interleaved.
- ``history``: p50 of claim, lookup and detokenize on one connection, with ``--history-rows`` USED pairs
  in front vs none (interleaved rounds), plus the admin's pair list and the counts. Lookups of recent
  pairs and of pairs spread uniformly over the history are both compared with a lookup in the empty
  table (which has no old pairs). Measured per ``--history-cache`` state: ``cold`` (the cluster just
  restarted: empty shared buffers) and ``warm`` (after reading the table and its indexes through the
  buffers, a long-running server's steady state).

The benchmark's own cluster runs with production-like memory (``--shared-buffers``, default 4GB, about
a quarter of this 24 GB machine's RAM, and ``--effective-cache-size``), set with ALTER SYSTEM and a
restart; ``--shared-buffers 128MB`` is PostgreSQL's default (the figures before this option existed).
"""
from __future__ import annotations

import random
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from bench import claim_bench as cb
from bench.loadgen import percentile
from bench.pgbench import pgbench

PHASES = ("shapes", "indexes", "snapshot", "history")
CACHE_STATES = ("cold", "warm")


def cache_states(value: str) -> list[str]:
    states = [s.strip() for s in value.split(",") if s.strip()]
    if not states or set(states) - set(CACHE_STATES):
        raise ValueError(f"--history-cache takes {', '.join(CACHE_STATES)} (comma-separated): {value!r}")
    return sorted(set(states), key=CACHE_STATES.index)


class Command(BaseCommand):
    help = "Benchmark the reservation claim on realistic table shapes in scratch databases (pgbench)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--phases", default=",".join(PHASES), help="Comma-separated: " + ", ".join(PHASES))
        parser.add_argument("--seconds", type=int, default=8, help="pgbench duration per run (shapes, indexes).")
        parser.add_argument("--clients", type=int, default=8)
        parser.add_argument("--scale", type=float, default=1.0,
                            help="Multiply every table size (0.1 for a quick look).")
        parser.add_argument("--snapshot-seconds", type=int, default=60)
        parser.add_argument("--history-rows", type=int, default=10_000_000)
        parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds (indexes, history).")
        parser.add_argument("--database", default="bench_claim")
        parser.add_argument("--on-database-url-server", action="store_true",
                            help="Scratch databases on DATABASE_URL's server instead of the benchmark's own cluster.")
        parser.add_argument("--keep-server", action="store_true",
                            help="Leave the benchmark's own PostgreSQL (var/bench_claim_pg) running afterwards.")
        parser.add_argument("--shared-buffers", type=cb.memory_setting, default="4GB",
                            help="shared_buffers of the benchmark's own cluster (default 4GB: ~25%% of this "
                                 "machine's 24 GB, as sized for production; 128MB is PostgreSQL's default).")
        parser.add_argument("--effective-cache-size", type=cb.memory_setting, default="12GB",
                            help="effective_cache_size of the benchmark's own cluster (default 12GB, ~50%% of RAM).")
        parser.add_argument("--history-cache", type=cache_states, default=list(CACHE_STATES),
                            help="history phase: measure with a cold cache (cluster restarted first), a warm "
                                 "one (table and indexes read through shared buffers first), or both "
                                 "(default cold,warm).")

    def handle(self, *args: Any, **opts: Any) -> None:
        phases = [p.strip() for p in opts["phases"].split(",") if p.strip()]
        unknown = set(phases) - set(PHASES)
        if unknown:
            raise SystemExit(f"unknown phases: {sorted(unknown)}")
        self.opts = opts
        self.scale = opts["scale"]
        self.on_shared = opts["on_database_url_server"]
        if self.on_shared:
            self.line("scratch databases on DATABASE_URL's server: --shared-buffers/--effective-cache-size "
                      "not applied (its own settings are printed with the history phase)")
        else:
            # A restart empties shared buffers: the history phase's "cold" state starts from there.
            applied = cb.configure_private_server(
                settings={"shared_buffers": opts["shared_buffers"],
                          "effective_cache_size": opts["effective_cache_size"]},
                restart="history" in phases and "cold" in opts["history_cache"])
            self.line(f"cluster {cb.PGDATA.relative_to(cb.ROOT)}: "
                      + ", ".join(f"{k} = {v}" for k, v in applied.items()))
        self.url = cb.scratch_url(opts["database"], on_database_url_server=self.on_shared)
        self.line(f"scratch database {opts['database']}: migrating")
        cb.migrate(self.url)
        try:
            with cb.connect(self.url) as conn:
                cb.ensure_api_key(conn)
                for phase in phases:
                    getattr(self, f"phase_{phase}")(conn)
        finally:
            if not (opts["keep_server"] or self.on_shared):
                cb.stop_private_server()

    def line(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def n(self, rows: int) -> int:
        return max(int(rows * self.scale), 100)

    # ---- shapes ------------------------------------------------------------------------------------

    def phase_shapes(self, conn: Any) -> None:
        self.line("\n## shapes (planner cliff): pick plan + pgbench naive vs ours, "
                  f"{self.opts['clients']} clients, {self.opts['seconds']} s per run (small pools: a third of "
                  "their pairs per run)")
        self.line("| shape | stage | AVAILABLE share | naive pick: index, rows filtered, ms | ours pick: index, rows "
                  "filtered, ms | naive claims/s | ours claims/s |")
        self.line("|---|---|---|---|---|---|---|")
        cb.set_autovacuum(conn, enabled=False)
        try:
            # The shape: pool "front" (47k rows, half issued) then pool "big" (200k issued, ANALYZE, 700k new).
            cb.reset_pairs(conn)
            front, big = cb.ensure_pools(conn, ["shape-front", "shape-big"])
            cb.insert_used(conn, pool_ids=[front], rows=self.n(23_000), tag="f")
            cb.insert_available(conn, pool_id=front, rows=self.n(23_593), tag="fa")
            cb.insert_used(conn, pool_ids=[big], rows=self.n(200_000), tag="b")
            conn.execute("VACUUM ANALYZE core_tokenpair")
            cb.insert_available(conn, pool_id=big, rows=self.n(700_000), tag="ba")
            label = f"two pools, {self.n(200_000):,} issued + {self.n(700_000):,} new"
            self.shape_row(conn, label, "after bulk insert, before ANALYZE", big)
            conn.execute("ANALYZE core_tokenpair")
            self.shape_row(conn, label, "analyzed", big)

            total = self.n(400_000)
            for share in (0.01, 0.10, 0.50, 0.90):
                cb.reset_pairs(conn)
                pools = cb.ensure_pools(conn, ["shape-a", "shape-b", "shape-c"])
                cb.insert_used(conn, pool_ids=pools, rows=int(total * (1 - share)), tag=f"h{share}")
                cb.insert_available(conn, pool_id=pools[-1], rows=int(total * share), tag=f"a{share}")
                conn.execute("VACUUM ANALYZE core_tokenpair")
                self.shape_row(conn, f"three pools, history in front, {total:,} rows", "analyzed", pools[-1],
                               share=share)
        finally:
            cb.set_autovacuum(conn, enabled=True)

    def shape_row(self, conn: Any, shape: str, stage: str, pool_id: int, share: float | None = None) -> None:
        total = conn.execute("SELECT count(*) FROM core_tokenpair").fetchone()[0]
        avail = cb.available(conn, pool_id)
        share = avail / total if share is None else share
        naive = cb.explain_pick(conn, variant="naive", pool_id=pool_id)
        ours = cb.explain_pick(conn, variant="ours", pool_id=pool_id)
        seconds, clients = self.opts["seconds"], self.opts["clients"]
        # A small pool: at most a third of its pairs per run, so both runs claim real pairs to the end.
        per_client = max(avail // (3 * clients), 1) if avail < 3_000 * seconds else None
        # Interleaved in the same minute: naive, then ours, on the same table.
        naive_run = pgbench(self.url, cb.pgbench_script(conn, variant="naive", pool_id=pool_id),
                               clients=clients, seconds=seconds, transactions=per_client)
        ours_run = pgbench(self.url, cb.pgbench_script(conn, variant="ours", pool_id=pool_id),
                              clients=clients, seconds=seconds, transactions=per_client)

        def fmt(p: dict[str, Any]) -> str:
            return f"{p['index']}, {p['removed']:,}, {p['ms']:.2f}"

        self.line(f"| {shape} | {stage} | {share:.0%} | {fmt(naive)} | {fmt(ours)} | {naive_run.tps:,.0f} | "
                  f"{ours_run.tps:,.0f} |")

    # ---- indexes -----------------------------------------------------------------------------------

    def phase_indexes(self, conn: Any) -> None:
        self.line(f"\n## indexes: our single claim, pgbench {self.opts['clients']} clients, "
                  f"{self.opts['seconds']} s per run, {self.opts['rounds']} interleaved rounds")
        cb.reset_pairs(conn)
        (pool,) = cb.ensure_pools(conn, ["index-pool"])
        per_run = 8_000 * self.opts["seconds"]
        cb.insert_available(conn, pool_id=pool, rows=per_run * 2 * self.opts["rounds"], tag="ix")
        conn.execute("VACUUM ANALYZE core_tokenpair")
        script = cb.pgbench_script(conn, variant="ours", pool_id=pool)
        self.line("| round | indexes on core_tokenpair | claims/s | latency avg ms |")
        self.line("|---|---|---|---|")
        try:
            for round_no in range(1, self.opts["rounds"] + 1):
                order = (True, False) if round_no % 2 else (False, True)
                for with_like in order:
                    cb.like_indexes(conn, present=with_like)
                    conn.execute("VACUUM core_tokenpair")
                    run = pgbench(self.url, script, clients=self.opts["clients"], seconds=self.opts["seconds"])
                    label = f"{cb.index_count(conn)} ({'with' if with_like else 'without'} the two _like indexes)"
                    self.line(f"| {round_no} | {label} | {run.tps:,.0f} | {run.latency_ms:.2f} |")
        finally:
            cb.like_indexes(conn, present=False)

    # ---- snapshot ----------------------------------------------------------------------------------

    def phase_snapshot(self, conn: Any) -> None:
        hold = self.opts["snapshot_seconds"]
        self.line(f"\n## snapshot held: {self.opts['clients']} clients; undisturbed {self.opts['seconds'] * 2} s, "
                  f"then {hold} s with a REPEATABLE READ snapshot held (claims/s per 10 s)")
        cb.reset_pairs(conn)
        (pool,) = cb.ensure_pools(conn, ["snapshot-pool"])
        self.line(f"building {self.n(1_000_000):,} USED + {self.n(1_200_000):,} AVAILABLE pairs ...")
        cb.insert_used(conn, pool_ids=[pool], rows=self.n(1_000_000), tag="s")
        cb.insert_available(conn, pool_id=pool, rows=self.n(1_200_000), tag="sa0")
        conn.execute("VACUUM ANALYZE core_tokenpair")
        self.line("| claim | undisturbed /s | held: per 10 s | last 10 s / undisturbed | pairs left after |")
        self.line("|---|---|---|---|---|")
        top_ups = 0
        for count, unit in ((1, "claims"), (100, "pairs")):
            for variant in ("front", "ours"):
                if cb.available(conn, pool) < self.n(1_000_000):
                    top_ups += 1
                    cb.insert_available(conn, pool_id=pool, rows=self.n(1_000_000), tag=f"sa{top_ups}")
                conn.execute("VACUUM ANALYZE core_tokenpair")
                script = cb.pgbench_script(conn, variant=variant, pool_id=pool, count=count)
                calm = pgbench(self.url, script, clients=self.opts["clients"], seconds=self.opts["seconds"] * 2)
                # Enough pairs for the held run at the undisturbed rate (+50 %): an empty pool would
                # answer fast and flatter the numbers.
                need = int(calm.tps * count * (hold + 5) * 1.5)
                if cb.available(conn, pool) < need:
                    top_ups += 1
                    cb.insert_available(conn, pool_id=pool, rows=need, tag=f"sa{top_ups}")
                conn.execute("VACUUM core_tokenpair")
                holder = cb.SnapshotHolder(self.url)
                try:
                    held = pgbench(self.url, script, clients=self.opts["clients"], seconds=hold, progress=10)
                finally:
                    holder.close()
                base = calm.tps * count
                series = [t * count for t in held.intervals]
                last = series[-1] if series else 0.0
                label = f"{variant}, {'single' if count == 1 else f'batch of {count}'} ({unit}/s)"
                left = cb.available(conn, pool)
                self.line(f"| {label} | {base:,.0f} | {' / '.join(f'{t:,.0f}' for t in series)} | "
                          f"{last / base if base else 0:.0%} | {left:,} |")

    # ---- history -----------------------------------------------------------------------------------

    def phase_history(self, conn: Any) -> None:
        rows = self.opts["history_rows"]
        hurl = cb.scratch_url(self.opts["database"] + "_history", on_database_url_server=self.on_shared)
        cb.migrate(hurl)
        with cb.connect(hurl) as hist:
            cb.ensure_api_key(hist)
            (hpool,) = cb.ensure_pools(hist, ["history-pool"])
            have = hist.execute("SELECT count(*) FROM core_tokenpair WHERE status = 'USED'").fetchone()[0]
            if have != rows:
                self.line(f"building {rows:,} USED pairs in {self.opts['database']}_history (indexes built after) ...")
                started = time.monotonic()
                self.load_history(hist, pool=hpool, rows=rows, template=conn)
                self.line(f"  built in {time.monotonic() - started:,.0f} s")
            size = hist.execute("SELECT pg_size_pretty(pg_total_relation_size('core_tokenpair'))").fetchone()[0]
            cb.reset_pairs(conn)
            (epool,) = cb.ensure_pools(conn, ["history-pool"])
            if cb.available(hist, hpool) < 50_000:
                cb.insert_available(hist, pool_id=hpool, rows=100_000, tag=f"ha{int(time.time())}")
                hist.execute("VACUUM ANALYZE core_tokenpair")
            cb.insert_available(conn, pool_id=epool, rows=100_000, tag="ea")
            conn.execute("VACUUM ANALYZE core_tokenpair")
            settings = ", ".join(f"{k} = {v}" for k, v in cb.server_settings(hist).items())
            self.line(f"\n## history: {rows:,} USED pairs ({size} with indexes) vs none; p50 ms on one "
                      f"connection, {self.opts['rounds']} interleaved rounds of 300 operations each; {settings}")
            for state in self.opts["history_cache"]:
                if state == "warm":
                    took = sum(cb.warm_table(c) for c in (conn, hist))
                    self.line(f"\n### warm: table and indexes read through shared buffers first ({took:,.0f} s)")
                else:
                    cached = cb.os_cached_share(hist)
                    page_cache = ("unknown share" if cached is None else f"{cached:.0%}") + \
                        " of the table's and indexes' files in the OS page cache, not dropped"
                    self.line(f"\n### cold: cluster restarted at the start of this run (shared buffers empty; "
                              f"{page_cache})" if not self.on_shared else
                              "\n### cold: NOT guaranteed (DATABASE_URL's server was not restarted)")
                self.history_table(conn, epool, hist, hpool, rows=rows)
            self.line("\nadmin and counts on the history table (one run each, ms, after the states above):")
            for label, sql in (
                ("pair list, newest 50 (ORDER BY id DESC LIMIT 50)",
                 "SELECT * FROM core_tokenpair ORDER BY id DESC LIMIT 50"),
                ("pair list filtered status=USED", ("SELECT * FROM core_tokenpair WHERE status = 'USED' "
                                                    "ORDER BY id DESC LIMIT 50")),
                ("pair list filtered by pool", (f"SELECT * FROM core_tokenpair WHERE pool_id = {hpool} "
                                                "ORDER BY id DESC LIMIT 50")),
                ("changelist count (reltuples estimate)",
                 "SELECT reltuples::bigint FROM pg_class WHERE oid = 'core_tokenpair'::regclass"),
                ("filtered count capped at 10,000", ("SELECT count(*) FROM (SELECT 1 FROM core_tokenpair "
                                                     "WHERE status = 'USED' LIMIT 10000) AS c")),
                ("AVAILABLE count (partial index)", (f"SELECT count(*) FROM core_tokenpair WHERE pool_id = {hpool} "
                                                     "AND status = 'AVAILABLE'")),
                ("RESERVED count (partial index)", "SELECT count(*) FROM core_tokenpair WHERE status = 'RESERVED'"),
                ("full grouped count (snapshot job, once per interval)",
                 "SELECT pool_id, status, source, count(*) FROM core_tokenpair GROUP BY 1, 2, 3"),
            ):
                times = cb.timed(lambda sql=sql: hist.execute(sql).fetchall(), repeat=3)
                self.line(f"- {label}: {min(times):,.1f}")

    def history_table(self, conn: Any, epool: int, hist: Any, hpool: int, *, rows: int) -> None:
        """One table of p50s (and p90s): interleaved rounds, empty table then history table in each round."""
        results: dict[str, dict[str, list[float]]] = {"empty": {}, "history": {}}
        for _ in range(self.opts["rounds"]):
            for label, c, pool in (("empty", conn, epool), ("history", hist, hpool)):
                for op, values in self.history_ops(c, pool, spread_over=rows if label == "history" else 0).items():
                    results[label].setdefault(op, []).extend(values)
        self.line("| operation | empty history p50 ms | with history p50 ms | ratio (p50) | p90 ms empty / history |")
        self.line("|---|---|---|---|---|")
        for op, values in results["history"].items():
            # The empty table has no old pairs: both history rows of an operation are compared with
            # the same lookup there (of the pairs it just reserved).
            base = results["empty"].get(op) or results["empty"][op.split(",")[0] + ", recent pairs"]
            e, h = percentile(base, 0.5), percentile(values, 0.5)
            e90, h90 = percentile(base, 0.9), percentile(values, 0.9)
            self.line(f"| {op} | {e:.3f} | {h:.3f} | {h / e if e else 0:.2f}x | {e90:.3f} / {h90:.3f} |")
        self.line("(empty history: lookups of the pairs the empty table just reserved, the only ones it has; "
                  "both rows of an operation are compared with that same figure)")

    def load_history(self, hist: Any, *, pool: int, rows: int, template: Any) -> None:
        """Fastest honest way to a big table: drop the secondary indexes, one INSERT ... SELECT
        generate_series in chunks, then rebuild them (sorted builds) with the same definitions,
        read from ``template`` (the other scratch database, same migrations, never stripped: an
        interrupted load cannot lose them)."""
        cb.reset_pairs(hist)
        defs = template.execute(
            "SELECT i.relname, pg_get_indexdef(i.oid), c.conname, pg_get_constraintdef(c.oid)"
            " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
            " LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid"
            " WHERE x.indrelid = 'core_tokenpair'::regclass AND NOT x.indisprimary").fetchall()
        for index, _idef, constraint, _cdef in defs:
            if constraint:
                hist.execute(f'ALTER TABLE core_tokenpair DROP CONSTRAINT IF EXISTS "{constraint}"')
            hist.execute(f'DROP INDEX IF EXISTS "{index}"')
        chunk = 2_000_000
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            cb.insert_used(hist, pool_ids=[pool], rows=n, tag="h", first=start + 1)  # cb.history_token's tokens
            self.line(f"  {start + n:,} rows")
        hist.execute("SET maintenance_work_mem = '512MB'")
        for index, idef, constraint, _cdef in defs:
            hist.execute(idef)
            if constraint:
                hist.execute(f'ALTER TABLE core_tokenpair ADD CONSTRAINT "{constraint}" UNIQUE USING INDEX "{index}"')
        hist.execute("VACUUM ANALYZE core_tokenpair")

    def history_ops(self, conn: Any, pool: int, *, spread_over: int) -> dict[str, list[float]]:
        """p50 samples of the claim, and of lookup/detokenize of 300 recent pairs; with ``spread_over``
        (the history table's USED rows), also of 300 pairs spread uniformly over them."""
        claim_sql = cb.claim_sql_after(conn, pool_id=pool, after="%s")
        last = [0]

        def claim() -> None:
            row = conn.execute(claim_sql, [last[0]]).fetchone()
            last[0] = row[1] if row else 0  # RETURNING 0, t.id, ...

        claims = cb.timed(claim, repeat=300)
        # Recent pairs (the ones just reserved: what a card service looks up and detokenizes) exist
        # in both tables.
        recent = conn.execute("SELECT internal_token, external_ref_id FROM core_tokenpair WHERE status = 'RESERVED' "
                              "ORDER BY id DESC LIMIT 300").fetchall()
        lookup_sql = ("SELECT id, internal_token, external_ref_id, status FROM core_tokenpair "
                      "WHERE internal_token = ANY(%s)")
        detok_sql = ("SELECT id, internal_token, external_ref_id, status FROM core_tokenpair "
                     "WHERE external_ref_id = ANY(%s)")
        out = {"claim (ours, single)": claims}
        groups = [("lookup", "detokenize", "recent pairs", recent)]
        if spread_over:
            # Derived from the load's formula, not read from the table: reading them first would
            # pull their heap pages into the buffers and flatter the "cold" lookups.
            spread = [cb.history_token(random.randint(1, spread_over)) for _ in range(300)]
            groups.append(("lookup", "detokenize", "pairs spread uniformly over the history", spread))
        for lookup, detok, label, picks in groups:
            out[f"{lookup}, {label}"] = self.timed_finds(conn, lookup_sql, [p[0] for p in picks], label)
            out[f"{detok}, {label}"] = self.timed_finds(conn, detok_sql, [p[1] for p in picks], label)
        return out

    @staticmethod
    def timed_finds(conn: Any, sql: str, values: list[str], label: str) -> list[float]:
        """Per-statement ms of ``sql`` for each value; each must find its pair (a miss is cheaper
        than a hit and would flatter the figure)."""
        values_left = iter(values)
        found = [0]

        def one() -> None:
            found[0] += len(conn.execute(sql, [[next(values_left)]]).fetchall())

        times = cb.timed(one, repeat=len(values))
        if found[0] != len(values):
            raise RuntimeError(f"{label}: {found[0]} of {len(values)} lookups found their pair")
        return times
