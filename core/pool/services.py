"""Writes of the pool room: reservations and their lifecycle, the bulk insert, lookup/detokenize.

Transactions are held exactly around what must commit together and never around a TOME call: a
transaction left open while waiting on the network holds back VACUUM for every other reservation
(docs/architecture.md, design notes)."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Sequence

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from core.api.models import ApiKey
from core.errors import (
    IdempotencyKeyReused,
    InvalidRequest,
    PairNotFound,
    PoolUnavailable,
    ReservationNotActive,
    UpstreamUnavailable,
)
from core.pool.models import AuditAction, AuditOutcome, AuditRecord, PairSource, PairStatus, Pool, TokenPair
from core.pool.selectors import parse_reservation_id, pool_available_up_to, reservation_get
from core.pool.signals import pairs_reserved
from tokenpool_tome.correlation import get_correlation_id

if TYPE_CHECKING:  # the TOME client is imported lazily: only the fallback and misses need it
    from tokenpool_tome.client import TokenPair as TomePair

__all__ = [
    "PairResult",
    "request_fingerprint",
    "reservation_create",
    "reservation_batch_create",
    "reservation_confirm",
    "reservation_release",
    "reservations_expire",
    "pairs_insert_bulk",
    "pair_lookup",
    "pair_lookup_batch",
    "pair_detokenize",
    "pair_detokenize_batch",
]

logger = logging.getLogger(__name__)

IDEMPOTENCY_KEY_MAX_LENGTH = 255
IDEMPOTENCY_CONSTRAINT = "pair_idempotency_unique"
# Retry-After when TOME gives no hint (connection refused, timeouts).
DEFAULT_RETRY_AFTER_SECONDS = 5.0
# Rounds of "count what the pool has, make the rest live, claim" before making everything live.
_FALLBACK_ROUNDS = 3

_PAIR_FIELDS: tuple[str, ...] = tuple(f.attname for f in TokenPair._meta.concrete_fields)
_RETURNING = ", ".join(f"t.{name}" for name in _PAIR_FIELDS) + (
    ", (SELECT p.name FROM core_pool AS p WHERE p.id = t.pool_id) AS pool_name"
)

# ---- the claim -----------------------------------------------------------------------------------
# The claim is SQL on purpose: one statement, one round trip, committed on its own in autocommit.
# `FOR UPDATE SKIP LOCKED` lets concurrent claimers step over each other's rows instead of queueing
# behind them; the inner SELECT walks the partial index `pair_available_idx (pool_id, id) WHERE
# status = 'AVAILABLE'` in id order (dropping ORDER BY is 2-2.5x slower: the planner then scans the
# table). If another transaction changed the row after our snapshot, the row lock re-checks
# `status = 'AVAILABLE'` and moves on, so a pair can only ever leave AVAILABLE once. The ORM
# equivalent (select_for_update + save in atomic) needs 4 round trips; see docs/benchmarks.md.
_CLAIM_ONE_SQL = f"""
UPDATE core_tokenpair AS t
   SET status = 'RESERVED', reservation_id = gen_random_uuid(), reserved_by_id = %(api_key)s,
       owner_ref = %(owner_ref)s, idempotency_key = %(idempotency_key)s,
       idempotency_index = %(idempotency_index)s, request_fingerprint = %(fingerprint)s,
       reserved_at = now(), expires_at = now() + %(ttl)s
 WHERE t.id = (SELECT id FROM core_tokenpair
                WHERE pool_id = %(pool)s AND status = 'AVAILABLE'
                ORDER BY id LIMIT 1
                  FOR UPDATE SKIP LOCKED)
   AND t.status = 'AVAILABLE'
RETURNING 0, {_RETURNING}
"""

# Several rows: the CTE is MATERIALIZED because `WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP
# LOCKED)` may be re-run by the planner and update more than n rows (PostgreSQL bug #15715). It is
# all-or-nothing inside the one statement: unless exactly n rows could be locked nothing is updated
# (the locks die with the statement), so a batch never leaves a partial claim behind.
_CLAIM_EXACTLY_SQL = f"""
WITH picked AS MATERIALIZED (
    SELECT id FROM core_tokenpair
     WHERE pool_id = %(pool)s AND status = 'AVAILABLE'
     ORDER BY id LIMIT %(count)s
       FOR UPDATE SKIP LOCKED
), numbered AS (
    SELECT id, (row_number() OVER (ORDER BY id) - 1)::int AS idx, count(*) OVER () AS picked_count
      FROM picked
)
UPDATE core_tokenpair AS t
   SET status = 'RESERVED', reservation_id = gen_random_uuid(), reserved_by_id = %(api_key)s,
       owner_ref = %(owner_ref)s, idempotency_key = %(idempotency_key)s,
       idempotency_index = CASE WHEN %(idempotency_key)s::text IS NULL THEN NULL ELSE numbered.idx END,
       request_fingerprint = %(fingerprint)s,
       reserved_at = now(), expires_at = now() + %(ttl)s
  FROM numbered
 WHERE t.id = numbered.id AND numbered.picked_count = %(count)s AND t.status = 'AVAILABLE'
RETURNING numbered.idx, {_RETURNING}
"""

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
RETURNING t.idempotency_index, {_RETURNING}
"""


def _pairs_from_rows(rows: Sequence[Sequence[object]], *, leading: int = 0) -> list[TokenPair]:
    """Model instances from `RETURNING [lead columns,] <pair columns>, pool_name` rows."""
    pairs = []
    n = len(_PAIR_FIELDS)
    for row in rows:
        pair = TokenPair.from_db("default", _PAIR_FIELDS, row[leading:leading + n])
        pair.pool_name = row[leading + n]
        pairs.append(pair)
    return pairs


def _fetch(sql: str, params: dict[str, object]) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


# ---- reservations ---------------------------------------------------------------------------------

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
    if not 1 <= count <= 500:
        raise InvalidRequest(errors={"count": ["Must be between 1 and 500."]})
    return _reserve(pool=pool, api_key=api_key, count=count, idempotency_key=idempotency_key,
                    owner_ref=owner_ref, operation="reserve_batch")


def _validate_idempotency_key(idempotency_key: str | None) -> None:
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= IDEMPOTENCY_KEY_MAX_LENGTH:
        raise InvalidRequest("The Idempotency-Key header must be 1 to 255 characters.",
                             errors={"Idempotency-Key": ["Must be 1 to 255 characters."]})


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
        pairs = _claim_pairs(params=params, count=count)
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


def _claim_pairs(*, params: dict[str, object], count: int) -> list[TokenPair]:
    """Claim exactly ``count`` pool pairs in one autocommitted statement, or none at all."""
    if count == 1:
        rows = _fetch(_CLAIM_ONE_SQL, {**params, "idempotency_index": 0 if params["idempotency_key"] else None})
    else:
        rows = _fetch(_CLAIM_EXACTLY_SQL, {**params, "count": count})
    rows.sort(key=lambda row: row[0])
    return _pairs_from_rows(rows, leading=1)


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
            claimed = _claim_pairs(params=params, count=from_pool) if from_pool else []
            if len(claimed) != from_pool:
                continue  # others took the pairs we counted; nothing was claimed, go round again
            direct = _insert_direct(params=params, pairs=live, first_index=from_pool)
        logger.info("reservation fallback", extra={"pool": pool.name, "from_pool": len(claimed),
                                                   "direct": len(direct)})
        live.clear()
        return claimed + direct
    raise AssertionError("unreachable: the last round takes nothing from the pool")


def _generate_live(*, pool: Pool, count: int) -> list[TomePair]:
    from core.tome.provider import tome_client_for_pool
    from tokenpool_tome.errors import TomeError, TomeUnavailable

    if connection.in_atomic_block:  # a TOME call inside a transaction would hold back VACUUM
        logger.warning("TOME generate called inside a transaction", extra={"pool": pool.name})
    try:
        # The pool's own namespaces, like its refills: a direct pair must look like a pooled one.
        return tome_client_for_pool(pool).generate_pairs(count)
    except TomeUnavailable as exc:
        raise PoolUnavailable(retry_after=exc.retry_after or DEFAULT_RETRY_AFTER_SECONDS) from exc
    except TomeError as exc:  # TOME refused (misconfigured namespace, bad answer): still unavailable
        logger.error("TOME refused the fallback generate", extra={"pool": pool.name, "error": type(exc).__name__})
        raise PoolUnavailable(retry_after=DEFAULT_RETRY_AFTER_SECONDS) from exc


def _insert_direct(*, params: dict[str, object], pairs: Sequence[TomePair], first_index: int) -> list[TokenPair]:
    if not pairs:
        return []
    rows = _fetch(_INSERT_DIRECT_SQL, {
        **params,
        "internal_tokens": [p.internal_token for p in pairs],
        "external_ref_ids": [p.external_ref_id for p in pairs],
        "indexes": list(range(first_index, first_index + len(pairs))),
    })
    order = {p.internal_token: i for i, p in enumerate(pairs)}
    result = _pairs_from_rows(rows, leading=1)
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


# ---- lifecycle ------------------------------------------------------------------------------------
# Each transition is one conditional UPDATE: the WHERE clause is the state machine, so two
# concurrent confirms/releases cannot both act on stale reads.

_CONFIRM_SQL = f"""
UPDATE core_tokenpair AS t
   SET status = 'USED', used_at = now(), owner_ref = COALESCE(%(owner_ref)s, t.owner_ref)
 WHERE t.reservation_id = %(reservation_id)s AND t.reserved_by_id = %(api_key)s
   AND t.status = 'RESERVED' AND t.expires_at > now()
RETURNING {_RETURNING}
"""

_RELEASE_SQL = f"""
UPDATE core_tokenpair AS t
   SET status = 'RETIRED', retired_at = now()
 WHERE t.reservation_id = %(reservation_id)s AND t.reserved_by_id = %(api_key)s AND t.status = 'RESERVED'
RETURNING {_RETURNING}
"""

_RETIRE_EXPIRED_ONE_SQL = """
UPDATE core_tokenpair SET status = 'RETIRED', retired_at = now()
 WHERE reservation_id = %(reservation_id)s AND status = 'RESERVED' AND expires_at <= now()
"""

# The sweep: live leases are the only rows in `pair_lease_expiry_idx`, so this stays cheap however
# many USED rows accumulate. Expired leases are RETIRED, never AVAILABLE: a pair that was handed out
# may have been used by the client even though it was never confirmed.
_EXPIRE_SQL = """
WITH expired AS MATERIALIZED (
    SELECT id FROM core_tokenpair
     WHERE status = 'RESERVED' AND expires_at <= COALESCE(%(now)s::timestamptz, now())
     ORDER BY expires_at LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
)
UPDATE core_tokenpair AS t SET status = 'RETIRED', retired_at = now()
  FROM expired WHERE t.id = expired.id AND t.status = 'RESERVED'
"""


def reservation_confirm(*, reservation_id: str | uuid.UUID, api_key: ApiKey,
                        owner_ref: str | None = None) -> TokenPair:
    """RESERVED → USED; confirming a USED reservation again returns it unchanged."""
    rid = parse_reservation_id(reservation_id)
    params = {"reservation_id": rid, "api_key": api_key.pk, "owner_ref": owner_ref}
    for _ in range(2):
        rows = _fetch(_CONFIRM_SQL, params)
        if rows:
            return _pairs_from_rows(rows)[0]
        pair = reservation_get(reservation_id=rid, api_key=api_key)
        if pair.status == PairStatus.USED:
            return pair
        if pair.status == PairStatus.RETIRED:
            raise ReservationNotActive("The reservation was released or its lease expired.")
        if pair.expires_at is not None and pair.expires_at <= _db_now():
            # Lease over but not swept yet: it is expired all the same.
            _fetch_none(_RETIRE_EXPIRED_ONE_SQL, {"reservation_id": rid})
            raise ReservationNotActive("The reservation's lease expired.")
    raise ReservationNotActive()  # pragma: no cover - only under a pathological clock race


def reservation_release(*, reservation_id: str | uuid.UUID, api_key: ApiKey) -> TokenPair:
    """RESERVED → RETIRED (never back to AVAILABLE); releasing again returns it unchanged."""
    rid = parse_reservation_id(reservation_id)
    rows = _fetch(_RELEASE_SQL, {"reservation_id": rid, "api_key": api_key.pk})
    if rows:
        return _pairs_from_rows(rows)[0]
    pair = reservation_get(reservation_id=rid, api_key=api_key)
    if pair.status == PairStatus.USED:
        raise ReservationNotActive("A used reservation cannot be released.")
    return pair  # RETIRED already (a RESERVED row would have matched the UPDATE)


def reservations_expire(*, now: datetime | None = None, limit: int = 10_000) -> int:
    """Retire up to ``limit`` leases past ``expires_at``; returns how many. Scheduled by the refill room."""
    with connection.cursor() as cursor:
        cursor.execute(_EXPIRE_SQL, {"now": now, "limit": limit})
        count = cursor.rowcount
    if count:
        logger.info("expired leases retired", extra={"count": count})
    return count


def _db_now() -> datetime:
    return _fetch("SELECT now()", {})[0][0]


def _fetch_none(sql: str, params: dict[str, object]) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


# ---- bulk insert (for the refill) ----------------------------------------------------------------

def pairs_insert_bulk(*, pool: Pool, pairs: Sequence[TomePair]) -> int:
    """Insert fresh AVAILABLE pairs; returns how many were new (pairs already stored are skipped).

    TOME never mints a token twice, so the usual batch is all new: COPY it straight into the table
    (inside a savepoint). Only if that hits a unique violation (a retried batch, a replayed TOME
    answer) is the batch inserted again through a staging table with ON CONFLICT DO NOTHING.
    Measured against the staged path and a multi-row INSERT in docs/benchmarks.md. The caller owns
    the transaction (one per TOME batch); without one, this runs in its own."""
    if not pairs:
        return 0
    created_at = timezone.now()
    try:
        with transaction.atomic(), connection.wrap_database_errors, connection.cursor() as cursor:
            with cursor.cursor.copy("COPY core_tokenpair (pool_id, internal_token, external_ref_id, status, "
                                    "source, created_at) FROM STDIN") as copy:
                for pair in pairs:
                    copy.write_row((pool.pk, pair.internal_token, pair.external_ref_id, "AVAILABLE", "pool",
                                    created_at))
        return len(pairs)
    except IntegrityError:
        pass  # the savepoint rolled the COPY back; skip the duplicates one by one below
    return _pairs_insert_staged(pool=pool, pairs=pairs)


def _pairs_insert_staged(*, pool: Pool, pairs: Sequence[TomePair]) -> int:
    """COPY into a transaction-local staging table, then `INSERT ... SELECT ... ON CONFLICT DO NOTHING`."""
    with transaction.atomic(), connection.wrap_database_errors, connection.cursor() as cursor:
        # ON COMMIT DROP: the staging table lives exactly as long as the batch's transaction.
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS core_tokenpair_stage "
                       "(internal_token text NOT NULL, external_ref_id text NOT NULL) ON COMMIT DROP")
        cursor.execute("TRUNCATE core_tokenpair_stage")
        with cursor.cursor.copy("COPY core_tokenpair_stage (internal_token, external_ref_id) FROM STDIN") as copy:
            for pair in pairs:
                copy.write_row((pair.internal_token, pair.external_ref_id))
        cursor.execute(
            "INSERT INTO core_tokenpair (pool_id, internal_token, external_ref_id, status, source, created_at) "
            "SELECT %s, internal_token, external_ref_id, 'AVAILABLE', 'pool', now() FROM core_tokenpair_stage "
            "ON CONFLICT DO NOTHING",
            [pool.pk],
        )
        return cursor.rowcount


# ---- lookup and detokenize ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PairResult:
    internal_token: str
    external_ref_id: str
    status: str
    source: str  # "pool": answered from the database; "tome": a live NS2 call (pair not stored)


# Pairs resolved only by TOME were issued before the pool existed; they are in use.
_TOME_RESOLVED_STATUS = PairStatus.USED


def pair_lookup(*, internal_token: str, api_key: ApiKey) -> PairResult:
    """internal token (NS1) → its pair; raises PairNotFound."""
    result = _resolve(action=AuditAction.LOOKUP, tokens=[internal_token], api_key=api_key, single=True)[0]
    if result is None:
        raise PairNotFound()
    return result


def pair_detokenize(*, external_ref_id: str, api_key: ApiKey) -> PairResult:
    """external reference id (NS2) → its pair; raises PairNotFound."""
    result = _resolve(action=AuditAction.DETOKENIZE, tokens=[external_ref_id], api_key=api_key, single=True)[0]
    if result is None:
        raise PairNotFound()
    return result


def pair_lookup_batch(*, internal_tokens: Sequence[str], api_key: ApiKey) -> list[PairResult | None]:
    """One result per item, in request order; None = not found."""
    return _resolve(action=AuditAction.LOOKUP, tokens=internal_tokens, api_key=api_key, single=False)


def pair_detokenize_batch(*, external_ref_ids: Sequence[str], api_key: ApiKey) -> list[PairResult | None]:
    return _resolve(action=AuditAction.DETOKENIZE, tokens=external_ref_ids, api_key=api_key, single=False)


def audit_token_digest(token: str) -> str:
    """HMAC-SHA-256 of a token under the server's secret: an investigator with the token can find
    its audit rows, but the audit table alone cannot be brute-forced back to 16-digit tokens."""
    return hmac.new(settings.SECRET_KEY.encode(), token.encode(), hashlib.sha256).hexdigest()


def _resolve(*, action: str, tokens: Sequence[str], api_key: ApiKey, single: bool) -> list[PairResult | None]:
    """Answer from the database (unique index); only tokens the database does not hold at all go to
    TOME, in one NS2 call. AVAILABLE pairs were never issued, so they are 'not found' and never
    sent to TOME (which would know them)."""
    key_field = "internal_token" if action == AuditAction.LOOKUP else "external_ref_id"
    wanted = list(dict.fromkeys(tokens))
    rows = TokenPair.objects.filter(**{f"{key_field}__in": wanted}).values_list(
        "id", "internal_token", "external_ref_id", "status")
    known: dict[str, tuple[int, str, str, str]] = {
        (row[1] if key_field == "internal_token" else row[2]): row for row in rows
    }
    misses = [t for t in wanted if t not in known]
    from_tome: dict[str, str | None] = {}
    if misses:
        try:
            from_tome = dict(zip(misses, _tome_resolve(action=action, tokens=misses, single=single)))
        except UpstreamUnavailable:
            _audit(api_key=api_key, action=action, entries=[
                (t, known[t][0] if t in known else None, AuditOutcome.UPSTREAM_UNAVAILABLE) for t in tokens
            ])
            raise

    results: list[PairResult | None] = []
    entries: list[tuple[str, int | None, str]] = []
    for token in tokens:
        row = known.get(token)
        if row is not None:
            pair_id, internal, external, status = row
            if status == PairStatus.AVAILABLE:
                results.append(None)
                entries.append((token, pair_id, AuditOutcome.NOT_FOUND))
            else:
                results.append(PairResult(internal, external, status, PairSource.POOL))
                entries.append((token, pair_id, AuditOutcome.FOUND))
            continue
        other = from_tome.get(token)
        if other is None:
            results.append(None)
            entries.append((token, None, AuditOutcome.NOT_FOUND))
        else:
            internal, external = (token, other) if key_field == "internal_token" else (other, token)
            results.append(PairResult(internal, external, _TOME_RESOLVED_STATUS, "tome"))
            entries.append((token, None, AuditOutcome.TOME))
    _audit(api_key=api_key, action=action, entries=entries)
    return results


def _tome_resolve(*, action: str, tokens: list[str], single: bool) -> list[str | None]:
    # A token the database does not hold belongs to no pool, so the deployment's default NS2
    # (settings.TOME_NS2) is asked: tokens issued before the pool existed live there.
    from core.tome.provider import get_tome_client
    from tokenpool_tome.errors import TomeError, TomeUnavailable

    client = get_tome_client()
    try:
        if action == AuditAction.LOOKUP:
            return [client.external_for(tokens[0])] if single else client.external_for_batch(tokens)
        return [client.internal_for(tokens[0])] if single else client.internal_for_batch(tokens)
    except TomeUnavailable as exc:
        raise UpstreamUnavailable(retry_after=exc.retry_after or DEFAULT_RETRY_AFTER_SECONDS) from exc
    except TomeError as exc:
        logger.error("TOME refused a %s", action, extra={"error": type(exc).__name__})
        raise UpstreamUnavailable(retry_after=DEFAULT_RETRY_AFTER_SECONDS) from exc


def _audit(*, api_key: ApiKey, action: str, entries: Sequence[tuple[str, int | None, str]]) -> None:
    correlation_id = get_correlation_id() or ""
    records = [
        AuditRecord(api_key_id=api_key.pk, action=action, pair_id=pair_id, token_digest=audit_token_digest(token),
                    correlation_id=correlation_id, outcome=outcome)
        for token, pair_id, outcome in entries
    ]
    if len(records) == 1:
        records[0].save(force_insert=True)
    else:
        AuditRecord.objects.bulk_create(records)
