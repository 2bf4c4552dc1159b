"""The whole stack behind a held snapshot (``bench_monitoring --held-snapshot``; docs/benchmarks.md,
"Held snapshot, whole stack").

Single reservations through the public service (``pool.services.reservation_create``) from ``threads``
threads, round-robin over every pool, while the monitoring's periodic work runs on its own connection
at the schedules' cadence (the snapshot task every ``MONITORING_SNAPSHOT_MINUTES``, the alert
evaluation every ``ALERT_EVALUATE_MINUTES``, both once at the start of each run): reservations/s per
window, once undisturbed and once while another connection holds a REPEATABLE READ snapshot
(``bench.claim_bench.SnapshotHolder``: ``BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM
core_pool`` and idle, ``idle_in_transaction_session_timeout`` off). The pair table's and the counter
table's statistics (``pg_stat_user_tables``, sizes) are read before and after each run.
"""
from __future__ import annotations

import itertools
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection

from bench.claim_bench import SnapshotHolder
from keys.models import ApiKey
from monitoring.alerts import alerts_evaluate
from monitoring.tasks import snapshots_take_task
from pool.counters import COUNTER_TABLE, pair_counters_compact
from pool.models import Pool, TokenPair
from pool.services import reservation_create

PAIR_TABLE = TokenPair._meta.db_table  # noqa: SLF001 - Model._meta is Django's documented Options API

STATS_SQL = """
SELECT relname, n_live_tup, n_dead_tup, n_tup_upd, n_tup_hot_upd,
       pg_relation_size(relid), pg_indexes_size(relid)
FROM pg_stat_user_tables WHERE relname = ANY(%s) ORDER BY relname
"""


@dataclass
class RunResult:
    label: str
    windows: list[float]
    errors: int
    periodic: list[tuple[float, str, float]] = field(default_factory=list)  # (at s, task, wall ms)
    load: list[str] = field(default_factory=list)
    stats_before: list[tuple[object, ...]] = field(default_factory=list)
    stats_after: list[tuple[object, ...]] = field(default_factory=list)
    counter_rows: tuple[int, int] = (0, 0)  # visible pool_paircounter rows before, after
    probe: str = ""


def table_stats() -> list[tuple[object, ...]]:
    """pg_stat_user_tables for the pair and counter tables (stats flushed by other backends ≤ 1 s ago)."""
    time.sleep(1.5)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(STATS_SQL, [[PAIR_TABLE, COUNTER_TABLE]])
        return list(cursor.fetchall())


def counter_rows() -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {COUNTER_TABLE}")  # noqa: S608 - table name from the model
        return int(cursor.fetchone()[0])


def _periodic(stop: threading.Event, started: float, log: list[tuple[float, str, float]]) -> None:
    """The two schedules' functions on their cadence (first run at once), on this thread's connection."""
    tasks: list[tuple[str, Callable[[], object], float]] = [
        ("snapshot task", snapshots_take_task, settings.MONITORING_SNAPSHOT_MINUTES * 60),
        # What alerts_evaluate_task does, minus the TOME probe and the notifications: fold the counter
        # rows appended since the last fold, then evaluate.
        ("alert evaluation", lambda: (pair_counters_compact(), alerts_evaluate(probe=lambda: True, notify=False)),
         settings.ALERT_EVALUATE_MINUTES * 60),
    ]
    due = [started] * len(tasks)
    try:
        while not stop.is_set():
            for i, (name, work, every) in enumerate(tasks):
                if time.monotonic() >= due[i]:
                    at = time.monotonic()
                    work()
                    log.append((at - started, name, (time.monotonic() - at) * 1000))
                    due[i] += every
            stop.wait(0.5)
    finally:
        connection.close()


def _reserve(stop: threading.Event, pools: list[Pool], turn: itertools.count, key: ApiKey,
             done: list[float], errors: list[int]) -> None:
    try:
        while not stop.is_set():
            pool = pools[next(turn) % len(pools)]
            try:
                reservation_create(pool=pool, api_key=key, idempotency_key=None, owner_ref=None)
            except Exception:  # noqa: BLE001 - counted and reported; an empty pool would call TOME
                errors.append(1)
                continue
            done.append(time.monotonic())
    finally:
        connection.close()


def run(*, label: str, key: ApiKey, threads: int, seconds: int, window: int, hold_url: str | None,
        probe: Callable[[], str] | None = None) -> RunResult:
    """``seconds`` of reservations from ``threads`` threads with the periodic work beside them; with
    ``hold_url`` a REPEATABLE READ snapshot is held on another connection for the whole run. ``probe``
    runs after the reservations stop, the snapshot (if any) still held."""
    pools = list(Pool.objects.order_by("pk"))
    result = RunResult(label=label, windows=[], errors=0, stats_before=table_stats())
    before_rows = counter_rows()
    holder = SnapshotHolder(hold_url) if hold_url else None
    stop, turn = threading.Event(), itertools.count()
    done: list[float] = []
    errors: list[int] = []
    started = time.monotonic()
    workers = [threading.Thread(target=_reserve, args=(stop, pools, turn, key, done, errors))
               for _ in range(threads)]
    workers.append(threading.Thread(target=_periodic, args=(stop, started, result.periodic)))
    try:
        for worker in workers:
            worker.start()
        for _ in range(seconds // window):
            time.sleep(max(0.0, started + (len(result.load) + 1) * window - time.monotonic()))
            result.load.append(" ".join(f"{x:.1f}" for x in os.getloadavg()))
        stop.set()
        for worker in workers:
            worker.join()
        result.windows = [sum(1 for t in done if started + i * window <= t < started + (i + 1) * window) / window
                          for i in range(seconds // window)]
        result.errors = len(errors)
        # Read while the snapshot is still held: what VACUUM could not remove.
        result.stats_after = table_stats()
        result.counter_rows = (before_rows, counter_rows())
        if probe is not None:
            result.probe = probe()
    finally:
        if holder is not None:
            holder.close()
    return result


def report(results: list[RunResult], write: Callable[[str], None]) -> None:
    """Markdown: reservations/s per window for each run, the ratio, periodic work and table statistics."""
    calm = results[0]
    base = statistics.mean(calm.windows) if calm.windows else 0.0
    write("| run | reservations/s per window | mean | last window / undisturbed mean | errors |")
    write("|---|---|---|---|---|")
    for res in results:
        mean = statistics.mean(res.windows) if res.windows else 0.0
        last = res.windows[-1] / base if base and res.windows else 0.0
        write(f"| {res.label} | {' / '.join(f'{w:,.0f}' for w in res.windows)} | {mean:,.0f} | "
              f"{last:.2f} (mean {mean / base if base else 0:.2f}) | {res.errors} |")
    for res in results:
        write(f"\n{res.label}: load average per window: {' | '.join(res.load)}")
        write("periodic work (start s, task, wall ms): "
              + "; ".join(f"{at:.0f} s {name} {ms:,.0f} ms" for at, name, ms in res.periodic))
        write(f"{COUNTER_TABLE} rows visible: {res.counter_rows[0]} -> {res.counter_rows[1]}")
        if res.probe:
            write(res.probe)
        write("| table | when | live | dead | updates | HOT updates | heap | indexes |")
        write("|---|---|---|---|---|---|---|---|")
        for when, rows in (("before", res.stats_before), ("after", res.stats_after)):
            for name, live, dead, upd, hot, heap, idx in rows:
                write(f"| {name} | {when} | {live:,} | {dead:,} | {upd:,} | {hot:,} | {_mb(heap)} | {_mb(idx)} |")


def _mb(size: object) -> str:
    n = int(size)  # type: ignore[call-overload]
    return f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"
