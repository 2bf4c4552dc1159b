"""Reservation create and batch create: the claim, idempotent replays, and the live fallback when
the pool cannot cover a request."""
from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from functools import partial

from django.db import IntegrityError, connection, transaction
from django.db.models import F

from common.errors import IdempotencyKeyReused, InvalidRequest, PoolUnavailable
from keys.models import ApiKey
from pool.models import Pool, TokenPair
from pool.selectors import pool_available_up_to
from pool.services.bulk_insert import pairs_insert_bulk
from pool.services.claim import claim_pairs
from pool.services.rows import RETURNING, fetch, pairs_from_rows
from pool.services.tome import tome_errors_as
from pool.signals import pairs_reserved
from tokenpool_tome.client import TokenPair as TomePair
from tome.provider import REQUEST, tome_client_for_pool

logger = logging.getLogger(__name__)

# The contract's limit on POST /reservations/batch (the API validates the same bound).
MAX_BATCH_RESERVATIONS = 500
IDEMPOTENCY_KEY_MAX_LENGTH = 255
# Contract section 2; the OpenAPI schema states the same expression (pool/api.py).
IDEMPOTENCY_KEY_REGEX = rf"^[A-Za-z0-9._:-]{{1,{IDEMPOTENCY_KEY_MAX_LENGTH}}}$"
IDEMPOTENCY_KEY_PATTERN = re.compile(IDEMPOTENCY_KEY_REGEX)
IDEMPOTENCY_CONSTRAINT = "pair_idempotency_unique"
# Rounds of "count what the pool has, make the rest live, claim" before making everything live.
_FALLBACK_ROUNDS = 3

# Pairs made live by the fallback: inserted already RESERVED for the caller, in the same
# transaction as any pool pairs of the same request.
_INSERT_DIRECT_SQL = f"""
INSERT INTO core_tokenpair AS t
       (pool_id, internal_token, external_ref_id, status, source, reservation_id, reserved_by_id,
        owner_ref, idempotency_key, idempotency_index, request_fingerprint, created_at, reserved_at,
        expires_at)
SELECT %(pool)s, d.internal_token, d.external_ref_id, 'RESERVED', 'direct', gen_random_uuid(),
       %(api_key)s, %(owner_ref)s, %(idempotency_key)s,
       CASE WHEN %(idempotency_key)s::text IS NULL THEN NULL ELSE d.idx END,
       %(fingerprint)s, now(), now(), now() + %(ttl)s
  FROM unnest(%(internal_tokens)s::text[], %(external_ref_ids)s::text[], %(indexes)s::int[])
       AS d(internal_token, external_ref_id, idx)
RETURNING t.idempotency_index, {RETURNING}
"""


def request_fingerprint(*, operation: str, pool_name: str, owner_ref: str | None, count: int) -> str:
    """SHA-256 of the canonical request: same key + same fingerprint = the same reservation(s).

    Canonical means after defaults (`{}` and `{"pool": "default"}` are the same request) and
    without fields the contract ignores."""
    canonical = json.dumps({"operation": operation, "pool": pool_name, "owner_ref": owner_ref,
                            "count": count}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def reservation_create(*, pool: Pool, api_key: ApiKey, idempotency_key: str | None,
                       owner_ref: str | None) -> tuple[TokenPair, bool]:
    """Hand out one AVAILABLE pair; fall back to a live pair when the pool is empty.

    Returns the pair and whether it was created now (False: an idempotent replay)."""
    pairs, created = _reserve(pool=pool, api_key=api_key, count=1, idempotency_key=idempotency_key,
                              owner_ref=owner_ref, operation="reserve")
    return pairs[0], created


def reservation_batch_create(*, pool: Pool, api_key: ApiKey, count: int, idempotency_key: str | None,
                             owner_ref: str | None = None) -> tuple[list[TokenPair], bool]:
    """Hand out ``count`` pairs, all or nothing; pairs the pool lacks are made live by TOME."""
    if not 1 <= count <= MAX_BATCH_RESERVATIONS:
        raise InvalidRequest(errors={"count": [f"Must be between 1 and {MAX_BATCH_RESERVATIONS}."]})
    return _reserve(pool=pool, api_key=api_key, count=count, idempotency_key=idempotency_key,
                    owner_ref=owner_ref, operation="reserve_batch")


def _validate_idempotency_key(idempotency_key: str | None) -> None:
    """Contract section 2: 1-255 characters of ``[A-Za-z0-9._:-]``; anything else (a tab, a space,
    non-ASCII) is a 400, never stored (issue 20 finding 8)."""
    if idempotency_key is not None and not IDEMPOTENCY_KEY_PATTERN.fullmatch(idempotency_key):
        raise InvalidRequest("The Idempotency-Key header must be 1 to 255 characters of A-Z, a-z, 0-9, '.', '_', "
                             "':' or '-'.",
                             errors={"Idempotency-Key": ["Must match ^[A-Za-z0-9._:-]{1,255}$."]})


def _reserve(*, pool: Pool, api_key: ApiKey, count: int, idempotency_key: str | None,
             owner_ref: str | None, operation: str) -> tuple[list[TokenPair], bool]:
    _validate_idempotency_key(idempotency_key)
    fingerprint = None
    if idempotency_key is not None:
        fingerprint = request_fingerprint(operation=operation, pool_name=pool.name, owner_ref=owner_ref,
                                          count=count)
        replay = _idempotent_replay(api_key=api_key, idempotency_key=idempotency_key,
                                    fingerprint=fingerprint)
        if replay is not None:
            return replay, False
    params: dict[str, object] = {
        "pool": pool.pk, "api_key": api_key.pk, "owner_ref": owner_ref, "idempotency_key": idempotency_key,
        "fingerprint": fingerprint, "ttl": pool.reservation_ttl,
    }
    leftovers: list[TomePair] = []
    try:
        pairs = claim_pairs(params=params, count=count)
        if not pairs:
            pairs = _reserve_with_fallback(pool=pool, params=params, count=count, leftovers=leftovers)
    except IntegrityError as exc:
        # Identical requests raced: the unique constraint made our claim fail and roll back (the
        # pair stays AVAILABLE, never issued); answer with the winner's reservation(s).
        if idempotency_key is None or not _is_idempotency_conflict(exc):
            raise
        if leftovers:
            _donate_to_pool(pool=pool, pairs=leftovers)
        replay = _idempotent_replay(api_key=api_key, idempotency_key=idempotency_key, fingerprint=fingerprint)
        if replay is None:  # the winner rolled back after blocking us: vanishingly rare, let the client retry
            raise
        return replay, False
    _notify_reserved(pool=pool, count=len(pairs))
    return pairs, True


def _reserve_with_fallback(*, pool: Pool, params: dict[str, object], count: int,
                           leftovers: list[TomePair]) -> list[TokenPair]:
    """The pool cannot cover the request: make the shortfall live through TOME (outside any
    transaction), then claim what the pool has and insert the live pairs in ONE transaction."""
    live: list[TomePair] = leftovers  # filled in place so the caller can donate them on a race
    for round_no in range(1, _FALLBACK_ROUNDS + 1):
        from_pool = count - len(live)
        # Last round: stop competing for pool pairs and make the rest live.
        available = pool_available_up_to(pool=pool, limit=from_pool) if round_no < _FALLBACK_ROUNDS else 0
        if from_pool - available > 0:
            live.extend(_generate_live(pool=pool, count=from_pool - available))
            from_pool = count - len(live)
        with transaction.atomic():
            claimed = claim_pairs(params=params, count=from_pool) if from_pool else []
            if len(claimed) != from_pool:
                continue  # others took the pairs we counted; nothing was claimed, go round again
            direct = _insert_direct(params=params, pairs=live, first_index=from_pool)
        logger.info("reservation fallback", extra={"pool": pool.name, "from_pool": len(claimed),
                                                   "direct": len(direct)})
        live.clear()
        return claimed + direct
    raise AssertionError("unreachable: the last round takes nothing from the pool")


def _generate_live(*, pool: Pool, count: int) -> list[TomePair]:
    if connection.in_atomic_block:  # a TOME call inside a transaction would hold back VACUUM
        logger.warning("TOME generate called inside a transaction", extra={"pool": pool.name})
    # The pool's own namespaces, like its refills: a direct pair must look like a pooled one. The
    # request budget (TOME_REQUEST_*): a hung TOME answers 503 within 3 s, inside the client's 5 s.
    with tome_errors_as(PoolUnavailable, operation="the fallback generate", pool=pool.name):
        return tome_client_for_pool(pool, budget=REQUEST).generate_pairs(count)


def _insert_direct(*, params: dict[str, object], pairs: Sequence[TomePair], first_index: int) -> list[TokenPair]:
    if not pairs:
        return []
    rows = fetch(_INSERT_DIRECT_SQL, {
        **params,
        "internal_tokens": [p.internal_token for p in pairs],
        "external_ref_ids": [p.external_ref_id for p in pairs],
        "indexes": list(range(first_index, first_index + len(pairs))),
    })
    order = {p.internal_token: i for i, p in enumerate(pairs)}
    result = pairs_from_rows(rows, leading=1)
    result.sort(key=lambda pair: order[pair.internal_token])
    return result


def _donate_to_pool(*, pool: Pool, pairs: Sequence[TomePair]) -> None:
    """Live pairs made for a request that lost an idempotency race were never handed out; rather
    than waste them, they join the pool as ordinary AVAILABLE pairs."""
    try:
        with transaction.atomic():
            pairs_insert_bulk(pool=pool, pairs=pairs)
    except Exception:  # best effort: unused TOME tokens are harmless
        logger.exception("could not add unused live pairs to the pool", extra={"pool": pool.name})


def _is_idempotency_conflict(exc: IntegrityError) -> bool:
    diag = getattr(exc.__cause__, "diag", None)
    return getattr(diag, "constraint_name", None) == IDEMPOTENCY_CONSTRAINT


def _idempotent_replay(*, api_key: ApiKey, idempotency_key: str, fingerprint: str | None) -> list[TokenPair] | None:
    pairs = list(
        TokenPair.objects.filter(reserved_by=api_key, idempotency_key=idempotency_key)
        .annotate(pool_name=F("pool__name")).order_by("idempotency_index")
    )
    if not pairs:
        return None
    if pairs[0].request_fingerprint != fingerprint:
        raise IdempotencyKeyReused()
    return pairs


def _notify_reserved(*, pool: Pool, count: int) -> None:
    # After commit (at once in autocommit, never if the reservation rolls back); robust: a
    # listener's failure (refill's low-watermark trigger) is logged, never fails the reservation.
    transaction.on_commit(partial(pairs_reserved.send, sender=Pool, pool=pool, count=count), robust=True)
