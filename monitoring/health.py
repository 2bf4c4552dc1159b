"""Operations endpoints without an API key (contract section 3): liveness and readiness.

In the monitoring room because readiness reads the database, TOME and every pool."""
from __future__ import annotations

import logging

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from pool.selectors import pools_without_available_pairs
from tome.provider import get_tome_client

logger = logging.getLogger(__name__)

__all__ = ["healthz", "readyz"]

OK, DEGRADED, DOWN = "ok", "degraded", "down"


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Up while the process answers; touches nothing else on purpose."""
    return JsonResponse({"status": OK})


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:  # any failure means "not ready"; the reason goes to the log
        logger.warning("readiness: database check failed", exc_info=True)
        return False


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
    database = _database_ok()
    tome = _tome_ok()
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
