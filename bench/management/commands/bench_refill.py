"""``manage.py bench_refill --pairs 100000``: refill throughput, TOME time vs database time, and
PostgreSQL's own COPY rate for the same number of rows, measured in the same run.

The refill is the real ``refill_run`` (advisory lock, one transaction per TOME batch,
``pairs_insert_bulk``) into a scratch pool that is deleted afterwards (``--keep`` keeps it). Without
``--tome-url`` a TOME emulator with zero latency is started as a subprocess on a free port.
The COPY baseline loads the same number of rows, shaped like real pairs, into a scratch copy of
``core_tokenpair`` (same columns, constraints and indexes; a regular, WAL-logged table), once as
one COPY and once in transactions of ``--batch-size`` rows like the refill.
"""
from __future__ import annotations

import os
import secrets
import string
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connection, transaction

from bench.loadgen import percentile
from devtools.netutil import free_port, stop_process, wait_answering
from onboarding.readiness import missing_approvals
from pool.models import Environment, Pool, TokenPair
from pool.services import pairs_insert_bulk
from refill.models import RefillLease, RefillOutcome, RefillRun, RefillTrigger
from refill.services import refill_run
from tokenpool_tome.client import TokenPair as Pair
from tome.provider import reset_tome_client

ROOT = Path(settings.BASE_DIR)
PAIR_TABLE = TokenPair._meta.db_table  # noqa: SLF001 - Model._meta is Django's documented Options API


def _fake_pairs(n: int) -> list[tuple[str, str]]:
    """Rows shaped like TOME's (16 digits; ``ext_`` + 26 base32 chars), unique."""
    alphabet = string.ascii_lowercase[:22] + "234567"
    base = secrets.randbelow(10**9)
    return [(f"{9 * 10**15 + base * 10**6 + i:016d}"[-16:],
             "ext_" + "".join(secrets.choice(alphabet) for _ in range(26))) for i in range(n)]


class Command(BaseCommand):
    help = "Benchmark a refill of N pairs against a zero-latency TOME emulator, plus the raw COPY rate."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pairs", type=int, default=100_000)
        parser.add_argument("--batch-size", type=int, default=1000, help="Pairs per TOME call and per transaction.")
        parser.add_argument("--tome-url", default=None, help="Use this TOME instead of starting an emulator.")
        parser.add_argument("--environment", default=Environment.UAT, choices=Environment.values)
        parser.add_argument("--keep", action="store_true", help="Keep the scratch pool and its pairs.")
        parser.add_argument("--compare-insert-methods", type=int, default=0, metavar="BATCHES",
                            help="Also time pairs_insert_bulk against a plain COPY into core_tokenpair, "
                                 "interleaved, for BATCHES batches each (e.g. 30).")

    def handle(self, *args: Any, **options: Any) -> None:
        pairs, batch = options["pairs"], options["batch_size"]
        if pairs < 1 or not 1 <= batch <= settings.TOME_MAX_BATCH:
            raise CommandError(f"--pairs must be ≥ 1 and --batch-size within 1..{settings.TOME_MAX_BATCH}")
        missing = missing_approvals(environment=options["environment"])
        if missing:
            raise CommandError(f"{options['environment']} onboarding is not approved ({'; '.join(missing)}); "
                               f"run: python manage.py load_onboarding_plan --approve-environment "
                               f"{options['environment']}")
        emulator = None
        url = options["tome_url"]
        try:
            if url is None:
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                emulator = subprocess.Popen(
                    [sys.executable, "manage.py", "tome_emulator", "--port", str(port), "--latency-ms", "0"],
                    cwd=ROOT, env=dict(os.environ, LOG_LEVEL="WARNING"),
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                )
                self._wait_healthy(url, emulator)
            self._point_at(url)
            refill = self._bench_refill(pairs=pairs, batch=batch, environment=options["environment"],
                                        keep=options["keep"])
            copy_one, copy_batched = self._bench_copy(pairs=pairs, batch=batch)
        finally:
            if emulator is not None:
                stop_process(emulator, timeout=10)
        run = refill
        if not run.finished_at or not run.inserted:
            raise CommandError(f"refill ended {run.outcome}: {run.error}")
        wall = (run.finished_at - run.started_at).total_seconds()
        cores = os.cpu_count()
        lines = [
            (f"bench_refill: {pairs} pairs, batch {batch}, TOME {'emulator (0 ms latency)' if emulator else url}, "
            f"PostgreSQL {connection.pg_version // 10000}, {cores} CPU(s)"),
            (f"  refill run #{run.pk}: outcome={run.outcome} inserted={run.inserted} in {wall:.2f} s "
            f"→ {run.inserted / wall:,.0f} pairs/s end to end"),
            (f"    TOME time {run.tome_seconds:.2f} s ({run.tome_seconds / wall:.0%}, {run.tome_calls} calls, "
            f"{run.inserted / run.tome_seconds:,.0f} pairs/s)"),
            (f"    DB time   {run.db_seconds:.2f} s ({run.db_seconds / wall:.0%}, "
            f"{run.inserted / run.db_seconds:,.0f} rows/s via pairs_insert_bulk)"),
            f"    other     {wall - run.tome_seconds - run.db_seconds:.2f} s (run bookkeeping, lock, counts)",
            f"  PostgreSQL COPY of {pairs} equivalent rows into a scratch copy of core_tokenpair:",
            f"    one COPY, one transaction:          {copy_one:.2f} s → {pairs / copy_one:,.0f} rows/s",
            f"    COPY per {batch} rows, one tx each: {copy_batched:.2f} s → {pairs / copy_batched:,.0f} rows/s",
            f"  refill DB rate / batched COPY rate = {(run.inserted / run.db_seconds) / (pairs / copy_batched):.2f}",
        ]
        if options["compare_insert_methods"]:
            bulk, direct = self._bench_insert_methods(batches=options["compare_insert_methods"], batch=batch,
                                                      environment=options["environment"])
            lines += [
                (f"  insert methods, {options['compare_insert_methods']} interleaved batches of {batch} "
                 "into core_tokenpair (median per batch, incl. commit):"),
                (f"    pairs_insert_bulk (temp table + INSERT … ON CONFLICT): {bulk * 1000:.1f} ms → "
                 f"{batch / bulk:,.0f} rows/s"),
                (f"    plain COPY core_tokenpair FROM STDIN:                  {direct * 1000:.1f} ms → "
                 f"{batch / direct:,.0f} rows/s"),
            ]
        self.stdout.write("\n".join(lines))
        if run.outcome != RefillOutcome.SUCCEEDED:
            raise CommandError(f"refill ended {run.outcome}: {run.error}")

    # ---- pieces ---------------------------------------------------------------------------------

    @staticmethod
    def _wait_healthy(url: str, proc: subprocess.Popen) -> None:
        if not wait_answering(f"{url}/healthz", process=proc, ok=lambda status: status == 200, timeout=30):
            raise CommandError(f"TOME emulator did not become healthy within 30 s (exit status {proc.poll()})")

    @staticmethod
    def _point_at(url: str) -> None:
        settings.TOME_BASE_URL = url
        reset_tome_client()

    def _bench_refill(self, *, pairs: int, batch: int, environment: str, keep: bool) -> RefillRun:
        """The refill into a scratch pool; the returned run is a detached copy when not ``keep``."""
        name = f"bench-refill-{os.getpid()}"
        pool = Pool.objects.create(name=name, environment=environment, target_size=pairs, low_watermark=0,
                                   critical_watermark=0, batch_size=batch, refill_enabled=False)
        try:
            return refill_run(pool=pool, trigger=RefillTrigger.MANUAL, count=pairs, time_budget_seconds=3600)
        finally:
            if not keep:
                try:
                    with transaction.atomic():
                        TokenPair.objects.filter(pool=pool).delete()
                        RefillLease.objects.filter(pool=pool).delete()
                        RefillRun.objects.filter(pool=pool).delete()
                        pool.delete()
                except DatabaseError as exc:  # the numbers are still worth printing
                    self.stderr.write(f"could not delete scratch pool {name!r}: {exc}")

    def _bench_copy(self, *, pairs: int, batch: int) -> tuple[float, float]:
        rows = _fake_pairs(pairs)
        table = f"bench_copy_{os.getpid()}"
        pool_id = Pool.objects.order_by("pk").values_list("pk", flat=True).first() or 1
        columns = "(pool_id, internal_token, external_ref_id, status, source, created_at)"

        def copy(chunk: list[tuple[str, str]]) -> None:
            with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {table} {columns} FROM STDIN") as cp:
                for internal, external in chunk:
                    cp.write_row((pool_id, internal, external, "AVAILABLE", "pool", "now"))

        def fresh_table() -> None:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS {table}")
                cursor.execute(f"CREATE TABLE {table} (LIKE {PAIR_TABLE} INCLUDING ALL)")

        try:
            fresh_table()
            t0 = time.perf_counter()
            with transaction.atomic():
                copy(rows)
            one = time.perf_counter() - t0

            fresh_table()
            t0 = time.perf_counter()
            for i in range(0, pairs, batch):
                with transaction.atomic():
                    copy(rows[i:i + batch])
            batched = time.perf_counter() - t0
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS {table}")
        return one, batched

    def _bench_insert_methods(self, *, batches: int, batch: int, environment: str) -> tuple[float, float]:
        rows = _fake_pairs(2 * batches * batch)
        pool = Pool.objects.create(name=f"bench-insert-{os.getpid()}", environment=environment,
                                   target_size=len(rows), low_watermark=0, critical_watermark=0,
                                   batch_size=batch, refill_enabled=False)
        columns = "(pool_id, internal_token, external_ref_id, status, source, created_at)"

        def bulk(chunk: list[tuple[str, str]]) -> None:
            with transaction.atomic():
                pairs_insert_bulk(pool=pool, pairs=[Pair(i, e) for i, e in chunk])

        def direct(chunk: list[tuple[str, str]]) -> None:
            with transaction.atomic(), connection.cursor() as cursor, \
                    cursor.cursor.copy(f"COPY {PAIR_TABLE} {columns} FROM STDIN") as cp:
                for internal, external in chunk:
                    cp.write_row((pool.pk, internal, external, "AVAILABLE", "pool", "now"))

        times: dict[str, list[float]] = {"bulk": [], "direct": []}
        try:
            for k in range(batches):
                # Interleaved, so load from anything else on the machine hits both methods alike.
                for name, method in (("bulk", bulk), ("direct", direct)):
                    start = (2 * k + (name == "direct")) * batch
                    chunk = rows[start:start + batch]
                    t0 = time.perf_counter()
                    method(chunk)
                    times[name].append(time.perf_counter() - t0)
        finally:
            with transaction.atomic():
                TokenPair.objects.filter(pool=pool).delete()
                pool.delete()
        return percentile(times["bulk"], 0.5), percentile(times["direct"], 0.5)
