"""Operations endpoints without an API key (contract section 3): liveness and readiness.

In the monitoring room because readiness reads the database, TOME and every pool."""
from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import connection, connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from common.postgresql.deadline import query_deadline
from pool.selectors import pools_without_available_pairs
from tome.provider import get_tome_client

logger = logging.getLogger(__name__)

__all__ = ["healthz", "readyz"]

OK, DEGRADED, DOWN = "ok", "degraded", "down"


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Up while the process answers; touches nothing else on purpose."""
    return JsonResponse({"status": OK})


class _DatabaseProbe:
    """``SELECT 1`` on a connection of its own, given ``DB_READINESS_TIMEOUT_SECONDS``: a frozen
    PostgreSQL makes /readyz say 503 within 2 s (contract section 3) instead of hanging with it. The
    check runs in a short-lived thread (alongside the TOME ping) because a new connection's start-up
    cannot be cut shorter than libpq's connect_timeout; the thread's own query deadline and connect
    timeout end it soon after."""

    def __init__(self) -> None:
        self.seconds = float(settings.DB_READINESS_TIMEOUT_SECONDS)
        self.result: list[bool] = []
        self.started = time.monotonic()
        self.thread = threading.Thread(target=_database_check, args=(self.seconds, self.result),
                                       name="readyz-db", daemon=True)
        self.thread.start()

    def ok(self) -> bool:
        self.thread.join(max(0.0, self.started + self.seconds - time.monotonic()))
        if not self.result:
            logger.warning("readiness: database did not answer within %.1f s", self.seconds)
        return bool(self.result and self.result[0])


def _database_check(seconds: float, result: list[bool]) -> None:
    try:
        with query_deadline(seconds), connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        result.append(True)
    except Exception:  # any failure means "not ready"; the reason goes to the log
        logger.warning("readiness: database check failed", exc_info=True)
        result.append(False)
    finally:
        connections.close_all()  # this thread's connection: opened for one probe, closed with it


def _tome_ok() -> bool:
    try:
        return bool(get_tome_client().ping())
    except Exception:
        logger.warning("readiness: TOME check failed", exc_info=True)
        return False


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """200 while the database and TOME answer, else 503. ``status``: ``down`` without the
    database, ``degraded`` without TOME or with an empty pool (an empty pool alone stays 200: the
    fallback still serves reservations live)."""
    probe = _DatabaseProbe()
    tome = _tome_ok()
    database = probe.ok()
    pools = DOWN
    if database:
        try:
            pools = DEGRADED if pools_without_available_pairs() else OK
        except Exception:
            logger.warning("readiness: pool check failed", exc_info=True)
    if not database:
        status = DOWN
    elif not tome or pools != OK:
        status = DEGRADED
    else:
        status = OK
    body = {"status": status, "checks": {"database": OK if database else DOWN, "tome": OK if tome else DOWN,
                                         "pools": pools}}
    return JsonResponse(body, status=200 if database and tome else 503)
