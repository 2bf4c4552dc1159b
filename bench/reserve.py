"""What ``bench_reserve`` compares the shipped code with, and its measuring loops.

- :func:`claim_pairs_orm`: the claim as the ORM would spell it, called directly beside the shipped
  ``claim_pairs`` (the "claim alone" lines); nothing here replaces runtime code;
- :func:`insert_bulk_multirow`: the third bulk insert, beside ``pairs_insert_bulk`` and ``pairs_insert_staged``;
- :func:`timed_calls`: ``threads`` threads sharing a budget of calls, each call timed;
- :func:`wsgi_post`: one POST through Django's WSGI handler in process (``--inprocess``)."""
from __future__ import annotations

import io
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.core.handlers.wsgi import WSGIHandler
from django.db import connection, transaction
from django.utils import timezone

from bench.loadgen import run_timed
from pool.models import PairStatus, Pool, TokenPair

# ---- the ORM variant of the claim, for comparison only ------------------------------------------

_ORM_CLAIM_FIELDS = ["status", "reservation_id", "reserved_by", "owner_ref", "idempotency_key", "idempotency_index",
                     "request_fingerprint", "reserved_at", "expires_at"]


def claim_pairs_orm(*, params: dict[str, Any], count: int) -> list[TokenPair]:
    """What the claim would be with the ORM: SELECT ... FOR UPDATE SKIP LOCKED, then save() each
    row, inside atomic (BEGIN, SELECT, UPDATE x count, COMMIT). Same signature as ``claim_pairs``."""
    with transaction.atomic():
        pairs = list(TokenPair.objects.select_for_update(skip_locked=True)
                     .filter(pool_id=params["pool"], status=PairStatus.AVAILABLE).order_by("id")[:count])
        if len(pairs) < count:
            return []
        now = timezone.now()
        for index, pair in enumerate(pairs):
            pair.status = PairStatus.RESERVED
            pair.reservation_id = uuid.uuid4()
            pair.reserved_by_id = params["api_key"]
            pair.owner_ref = params["owner_ref"]
            pair.idempotency_key = params["idempotency_key"]
            pair.idempotency_index = index if params["idempotency_key"] else None
            pair.request_fingerprint = params["fingerprint"]
            pair.reserved_at = now
            pair.expires_at = now + params["ttl"]
            pair.save(update_fields=_ORM_CLAIM_FIELDS)
            pair.pool_name = None
    return pairs


def insert_bulk_multirow(*, pool: Pool, pairs: list[Any], rows_per_statement: int = 1000) -> int:
    """The alternative bulk insert: multi-row INSERT ... ON CONFLICT DO NOTHING."""
    inserted = 0
    with transaction.atomic(), connection.cursor() as cursor:
        for start in range(0, len(pairs), rows_per_statement):
            chunk = pairs[start:start + rows_per_statement]
            values = ", ".join(["(%s, %s, %s, 'AVAILABLE', 'pool', now())"] * len(chunk))
            params: list[Any] = []
            for pair in chunk:
                params.extend((pool.pk, pair.internal_token, pair.external_ref_id))
            cursor.execute("INSERT INTO core_tokenpair (pool_id, internal_token, external_ref_id, status, source, "
                           f"created_at) VALUES {values} ON CONFLICT DO NOTHING", params)
            inserted += cursor.rowcount
    return inserted


# ---- threads sharing a budget of timed calls -----------------------------------------------------

@dataclass
class TimedCalls:
    elapsed: float
    latencies: list[float] = field(default_factory=list)  # seconds, successful calls only
    failures: Counter[str] = field(default_factory=Counter)


def timed_calls(call: Callable[[], str | None], *, threads: int, calls: int) -> TimedCalls:
    """``calls`` calls of ``call`` spread over ``threads`` threads (each with its own database
    connection), started together. ``call`` returns None on success, else what went wrong (counted
    by that text, left out of the latencies)."""
    remaining = [calls]
    lock = threading.Lock()
    result = TimedCalls(elapsed=0.0)
    barrier = threading.Barrier(threads + 1)

    def take_one() -> bool:
        with lock:
            if remaining[0] <= 0:
                return False
            remaining[0] -= 1
            return True

    def worker() -> None:
        mine: list[float] = []
        bad: Counter[str] = Counter()
        try:
            barrier.wait()
            while take_one():
                t0 = time.perf_counter()
                failure = call()
                if failure is None:
                    mine.append(time.perf_counter() - t0)
                else:
                    bad[failure] += 1
        finally:
            connection.close()
            with lock:
                result.latencies.extend(mine)
                result.failures.update(bad)

    result.elapsed = run_timed(worker, threads=threads, barrier=barrier)
    return result


# ---- in process ----------------------------------------------------------------------------------

def wsgi_post(handler: WSGIHandler, path_info: str, *, body: bytes, raw_key: str) -> str:
    """POST ``body`` (JSON) to ``path_info`` through ``handler`` with an API key; returns the status line."""
    status: list[str] = []
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path_info, "SERVER_NAME": "127.0.0.1",
               "SERVER_PORT": "8000", "HTTP_HOST": "127.0.0.1", "REMOTE_ADDR": "127.0.0.1",
               "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
               "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/json",
               "HTTP_AUTHORIZATION": f"Api-Key {raw_key}"}
    result = handler(environ, lambda s, h: status.append(s))
    b"".join(result)
    result.close()
    return status[0]
