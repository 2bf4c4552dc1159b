"""``manage.py refill_pool [--pool NAME] [--count N] [--trigger manual|startup]``: one refill, now.

Contract section 1: fills the pool up to its target now, whatever its schedule (and whether or
not its scheduled refills are enabled), and exits when done. Synchronous (no qcluster needed), so
``make run`` can fill the pool before anything serves; the run is recorded like any other
(RefillRun) and its summary printed. When another refill of the pool holds its lock, the command
waits for it and then tops up whatever is still missing (often nothing), so "done" means the pool
is full, not that someone else was busy. No time budget unless ``--time-budget`` sets one. Exit
status 0 when the pool is where it should be (succeeded / nothing to do), 1 otherwise (blocked,
failed, partial, still locked when the budget ran out).
"""
from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pool.models import Pool
from refill.models import RefillOutcome, RefillTrigger
from refill.services import refill_run


class Command(BaseCommand):
    help = "Refill a pool from TOME now (fills up to target_size, or adds exactly --count pairs)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pool", default="default", help="Pool name (default: %(default)s).")
        parser.add_argument("--count", type=int, default=None,
                            help="Add exactly this many pairs instead of filling up to target_size.")
        parser.add_argument("--trigger", choices=[RefillTrigger.MANUAL, RefillTrigger.STARTUP],
                            default=RefillTrigger.MANUAL)
        parser.add_argument("--time-budget", type=float, default=None,
                            help="Seconds before the run stops as 'partial' (default: no practical limit).")

    def handle(self, *args: Any, **options: Any) -> None:
        pool = Pool.objects.filter(name=options["pool"]).first()
        if pool is None:
            raise CommandError(f"Unknown pool {options['pool']!r}.")
        count = options["count"]
        if count is not None and count < 0:
            raise CommandError("--count must not be negative.")
        budget = options["time_budget"]
        if budget is None:
            budget = 24 * 3600.0  # "fill it now and exit when done": bounded by the target, not the clock
        deadline = time.monotonic() + budget
        while True:
            run = refill_run(pool=pool, trigger=options["trigger"], count=count,
                             time_budget_seconds=max(deadline - time.monotonic(), 0.0))
            if run.outcome != RefillOutcome.SKIPPED_LOCKED or time.monotonic() + 1.0 > deadline:
                break
            # Another refill is filling this pool: wait for it, then top up what it left (often nothing).
            self.stdout.write(f"pool={pool.name}: another refill holds the lock; waiting for it")
            time.sleep(1.0)
        seconds = (run.finished_at - run.started_at).total_seconds() if run.finished_at else 0.0
        rate = run.inserted / seconds if seconds > 0 else 0.0
        self.stdout.write(
            f"refill run #{run.pk} pool={pool.name} trigger={run.trigger} outcome={run.outcome} "
            f"requested={run.requested} inserted={run.inserted} tome_calls={run.tome_calls} "
            f"seconds={seconds:.2f} tome_seconds={run.tome_seconds:.2f} db_seconds={run.db_seconds:.2f} "
            f"pairs_per_second={rate:.0f}"
        )
        if run.error:
            self.stdout.write(f"  {run.error}")
        if run.outcome not in (RefillOutcome.SUCCEEDED, RefillOutcome.NOTHING_TO_DO):
            raise CommandError(f"refill ended {run.outcome}", returncode=1)
