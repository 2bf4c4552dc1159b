"""Refilling a pool from TOME: one advisory-locked run, one committed transaction per TOME batch.

- ``run.py``: ``refill_run``, the run itself (readiness gate, batches, outcome);
- ``lock.py``: single flight, the pool's advisory lock on a database session of its own;
- ``lease.py``: the "queued or running" lease that de-duplicates on-demand refills, and enqueueing;
- ``calls.py``: counting the TOME calls a run makes.
The algorithm and the crash-safety argument are in docs/refill.md. The public names are re-exported here."""
from refill.services.lease import (
    TASK_MANUAL,
    TASK_ON_DEMAND,
    lease_try_acquire,
    refill_enqueue_manual,
    refill_request,
)
from refill.services.lock import REFILL_LOCK_CLASS, pool_refill_locked
from refill.services.run import refill_run

__all__ = [
    "REFILL_LOCK_CLASS",
    "TASK_MANUAL",
    "TASK_ON_DEMAND",
    "lease_try_acquire",
    "pool_refill_locked",
    "refill_enqueue_manual",
    "refill_request",
    "refill_run",
]
