"""Reads of the pool room: pools and reservations."""
from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import cast

from django.conf import settings
from django.db import connection
from django.db.models import F
from django.db.models.signals import post_delete, post_save

from common.errors import PoolNotFound, ReservationNotFound
from common.ttl_cache import TTLCache
from keys.models import ApiKey
from pool.models import Pool, TokenPair

__all__ = [
    "DEFAULT_POOL_NAME",
    "parse_reservation_id",
    "pool_available_up_to",
    "pool_cache_clear",
    "pool_get",
    "pool_get_cached",
    "pools_without_available_pairs",
    "reservation_get",
]

DEFAULT_POOL_NAME = "default"
_POOL_NAME = re.compile(r"[-a-zA-Z0-9_]{1,64}")  # Pool.name is a SlugField(max_length=64)


def pool_get(*, name: str | None) -> Pool:
    """The pool called ``name`` (None → "default"); raises PoolNotFound."""
    name = name or DEFAULT_POOL_NAME
    if not _POOL_NAME.fullmatch(name):  # e.g. a NUL byte in the URL: PostgreSQL would refuse it
        raise PoolNotFound()
    try:
        return cast(Pool, Pool.objects.get(name=name))
    except Pool.DoesNotExist:
        raise PoolNotFound() from None


# A pool row is configuration: few of them, read on every reservation.
_pool_cache: TTLCache[str, Pool] = TTLCache(maxsize=1024, seconds=lambda: settings.POOL_CACHE_SECONDS)


def pool_get_cached(*, name: str | None) -> Pool:
    """``pool_get`` for the reservation hot path: the pool's SELECT costs as much as the claim
    itself. Cached in process for ``POOL_CACHE_SECONDS``; edits saved in this process (admin) apply
    at once, edits made elsewhere within that bound. Unknown names are never cached."""
    key = name or DEFAULT_POOL_NAME
    pool = _pool_cache.get(key)
    if pool is None:
        pool = pool_get(name=key)
        _pool_cache.put(key, pool)
    return pool


def pool_cache_clear() -> None:
    _pool_cache.clear()


def pool_available_up_to(*, pool: Pool, limit: int) -> int:
    """AVAILABLE pairs of ``pool``, counted no further than ``limit``.

    The inner ``LIMIT`` stops the index-only walk of ``pair_available_idx`` after ``limit`` entries,
    so the cost is bounded by the question ("at least N left?"), not by the pool's size."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM (SELECT 1 FROM core_tokenpair WHERE pool_id = %s"
                       " AND status = 'AVAILABLE' LIMIT %s) AS a", [pool.pk, limit])
        return cast(int, cursor.fetchone()[0])


def pools_without_available_pairs() -> list[str]:
    """Names of pools with no AVAILABLE pair (readiness). NOT EXISTS over the partial AVAILABLE
    index: one index probe per pool however big the table."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.name FROM core_pool AS p WHERE NOT EXISTS ("
            "SELECT 1 FROM core_tokenpair AS t WHERE t.pool_id = p.id AND t.status = 'AVAILABLE')"
        )
        return [row[0] for row in cursor.fetchall()]


def parse_reservation_id(reservation_id: str | uuid.UUID) -> uuid.UUID:
    """A reservation id from a URL; anything that is not a UUID is simply an unknown reservation."""
    if isinstance(reservation_id, uuid.UUID):
        return reservation_id
    try:
        return uuid.UUID(str(reservation_id))
    except ValueError:
        raise ReservationNotFound() from None


def reservation_get(*, reservation_id: str | uuid.UUID, api_key: ApiKey) -> TokenPair:
    """A reservation of ``api_key``; another key's reservation is as unknown as a missing one."""
    rid = parse_reservation_id(reservation_id)
    pair: TokenPair | None = (TokenPair.objects.filter(reservation_id=rid, reserved_by=api_key)
                              .annotate(pool_name=F("pool__name")).first())
    if pair is None:
        raise ReservationNotFound()
    return pair


def reservations_of(*, reservation_ids: Iterable[uuid.UUID], api_key: ApiKey) -> list[TokenPair]:
    """The key's reservations among ``reservation_ids`` (unknown and other keys' ones left out)."""
    return list(TokenPair.objects.filter(reservation_id__in=list(reservation_ids), reserved_by=api_key)
                .annotate(pool_name=F("pool__name")))


def _pool_changed(sender: type[Pool], **kwargs: object) -> None:
    pool_cache_clear()


post_save.connect(_pool_changed, sender=Pool, dispatch_uid="pool.selectors.pool_saved")
post_delete.connect(_pool_changed, sender=Pool, dispatch_uid="pool.selectors.pool_deleted")
