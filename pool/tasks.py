"""django-q2 task entry points of the pool room (scheduled by ``refill.schedules``)."""
from __future__ import annotations

from pool.services import reservations_expire


def reservations_expire_task() -> int:
    """Every minute: RESERVED pairs past their lease become RETIRED (never AVAILABLE again)."""
    return reservations_expire()
