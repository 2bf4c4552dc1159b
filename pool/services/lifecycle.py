"""After the claim: confirm (RESERVED → USED), release (RESERVED → RETIRED) and the lease-expiry sweep.

Each transition is one conditional UPDATE: the WHERE clause is the state machine, so two
concurrent confirms/releases cannot both act on stale reads."""
from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime

from django.utils import timezone

from common.errors import ReservationNotActive
from keys.models import ApiKey
from pool.models import PairStatus, TokenPair
from pool.selectors import parse_reservation_id, reservation_get, reservations_of
from pool.services.rows import RETURNING, db_now, execute, fetch, pairs_from_rows
from pool.signals import leases_expired

logger = logging.getLogger(__name__)

_CONFIRM_SQL = f"""
UPDATE core_tokenpair AS t
   SET status = 'USED', used_at = now(), owner_ref = COALESCE(%(owner_ref)s, t.owner_ref)
 WHERE t.reservation_id = %(reservation_id)s AND t.reserved_by_id = %(api_key)s
   AND t.status = 'RESERVED' AND t.expires_at > now()
RETURNING {RETURNING}
"""

_RELEASE_SQL = f"""
UPDATE core_tokenpair AS t
   SET status = 'RETIRED', retired_at = now()
 WHERE t.reservation_id = %(reservation_id)s AND t.reserved_by_id = %(api_key)s AND t.status = 'RESERVED'
RETURNING {RETURNING}
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
RETURNING t.reserved_by_id
"""


def reservation_confirm(*, reservation_id: str | uuid.UUID, api_key: ApiKey,
                        owner_ref: str | None = None) -> TokenPair:
    """RESERVED → USED; confirming a USED reservation again returns it unchanged."""
    rid = parse_reservation_id(reservation_id)
    params = {"reservation_id": rid, "api_key": api_key.pk, "owner_ref": owner_ref}
    for _ in range(2):
        rows = fetch(_CONFIRM_SQL, params)
        if rows:
            return pairs_from_rows(rows)[0]
        pair = reservation_get(reservation_id=rid, api_key=api_key)
        if pair.status == PairStatus.USED:
            return pair
        if pair.status == PairStatus.RETIRED:
            raise ReservationNotActive("The reservation was released or its lease expired.")
        if pair.expires_at is not None and pair.expires_at <= db_now():
            # Lease over but not swept yet: it is expired all the same.
            _expired_for(api_key, execute(_RETIRE_EXPIRED_ONE_SQL, {"reservation_id": rid}))
            raise ReservationNotActive("The reservation's lease expired.")
    raise ReservationNotActive()  # pragma: no cover - only under a pathological clock race


def reservation_current(*, reservation_id: str | uuid.UUID, api_key: ApiKey) -> TokenPair:
    """The reservation as it stands now. A lease past ``expires_at`` that the sweep has not reached
    yet (it runs every minute) is retired here, so a read never reports RESERVED for a lease that
    confirm would refuse. The database clock decides, as in confirm; the common case costs no write."""
    pair = reservation_get(reservation_id=reservation_id, api_key=api_key)
    if (pair.status == PairStatus.RESERVED and pair.expires_at is not None
            and pair.expires_at <= timezone.now()
            and _expired_for(api_key, execute(_RETIRE_EXPIRED_ONE_SQL, {"reservation_id": pair.reservation_id}))):
        pair = reservation_get(reservation_id=reservation_id, api_key=api_key)
    return pair


def reservation_release(*, reservation_id: str | uuid.UUID, api_key: ApiKey) -> TokenPair:
    """RESERVED → RETIRED (never back to AVAILABLE); releasing again returns it unchanged."""
    rid = parse_reservation_id(reservation_id)
    rows = fetch(_RELEASE_SQL, {"reservation_id": rid, "api_key": api_key.pk})
    if rows:
        return pairs_from_rows(rows)[0]
    pair = reservation_get(reservation_id=rid, api_key=api_key)
    if pair.status == PairStatus.USED:
        raise ReservationNotActive("A used reservation cannot be released.")
    return pair  # RETIRED already (a RESERVED row would have matched the UPDATE)


def reservations_expire(*, now: datetime | None = None, limit: int = 10_000) -> int:
    """Retire up to ``limit`` leases past ``expires_at``; returns how many (every minute:
    ``pool.tasks.reservations_expire_task``)."""
    by_key = Counter(row[0] for row in fetch(_EXPIRE_SQL, {"now": now, "limit": limit}))
    count = sum(by_key.values())
    if count:
        # Per API key and per consumer: how an operator sees a client's lost buffer after a crash
        # (docs/client-library.md, "After a crash"): this log line and the consumer's metric.
        keys = {pk: (name, consumer) for pk, name, consumer in
                ApiKey.objects.filter(pk__in=list(by_key)).values_list("pk", "name", "consumer__name")}
        logger.info("expired leases retired", extra={
            "count": count, "by_api_key": {str(keys.get(pk, (pk,))[0]): n for pk, n in by_key.items()}})
        by_consumer: Counter[str] = Counter()
        for pk, n in by_key.items():
            by_consumer[str(keys.get(pk, (pk, "unknown"))[1])] += n
        leases_expired.send(sender=TokenPair, by_consumer=dict(by_consumer))
    return count


def _expired_for(api_key: ApiKey, count: int) -> int:
    """Tell monitoring that ``count`` leases of ``api_key`` were retired as expired; returns ``count``."""
    if count:
        leases_expired.send(sender=TokenPair, by_consumer={api_key.consumer.name: count})
    return count


# ---- batch forms (contract section 2: POST /reservations/confirm/batch; release/batch is ours) -----

#: Per-item refusals of the batch forms, as the contract's codes.
NOT_FOUND = "not_found"
NOT_ACTIVE = "reservation_not_active"
MAX_BATCH_TRANSITIONS = 500

# The batch forms lock the named rows in id order first (FOR UPDATE, so two batches naming the same
# reservations in different orders queue behind each other instead of deadlocking) and decide on
# the locked row's latest version, which FOR UPDATE returns: its status, lease and key. The CTE
# names nothing but the reservation ids, so only the unique reservation_id index can serve it, and
# the UPDATE only the primary key, whatever the statistics say. With a status condition the planner
# took `pair_lease_expiry_idx` (estimated at 1 row when the table was last analysed full of
# AVAILABLE pairs, as right after a refill) and joined it to the batch in a nested loop, each id
# compared with every live lease: 0.5-0.9 s for 500 ids among 10,000 leases, seconds under load,
# past the request's query deadline. With the key's condition it took `pair_consumer_reserved_idx`
# and read the key's whole history. (docs/benchmarks.md, "Buffered client".) Another key's row
# named in a batch is locked for the statement and left alone: the answer says not_found.
_LOCK_BATCH_CTE = """
WITH target AS MATERIALIZED (
    SELECT id, status, expires_at, reserved_by_id FROM core_tokenpair
     WHERE reservation_id = ANY(%(ids)s::uuid[])
     ORDER BY id FOR UPDATE
)"""

_CONFIRM_MANY_SQL = f"""{_LOCK_BATCH_CTE}
UPDATE core_tokenpair AS t SET status = 'USED', used_at = now()
  FROM target
 WHERE t.id = target.id AND target.reserved_by_id = %(api_key)s AND target.status = 'RESERVED'
   AND target.expires_at > now()
RETURNING {RETURNING}
"""

_RELEASE_MANY_SQL = f"""{_LOCK_BATCH_CTE}
UPDATE core_tokenpair AS t SET status = 'RETIRED', retired_at = now()
  FROM target WHERE t.id = target.id AND target.reserved_by_id = %(api_key)s AND target.status = 'RESERVED'
RETURNING {RETURNING}
"""

_RETIRE_EXPIRED_MANY_SQL = """
UPDATE core_tokenpair SET status = 'RETIRED', retired_at = now()
 WHERE reservation_id = ANY(%(ids)s::uuid[]) AND status = 'RESERVED' AND expires_at <= now()
"""


def reservations_confirm_batch(*, reservation_ids: Sequence[uuid.UUID],
                               api_key: ApiKey) -> list[TokenPair | str]:
    """Each id as its single confirm, in request order: the pair (USED, also when it already was),
    or ``not_found`` / ``reservation_not_active``. One UPDATE for the whole batch."""
    done = _by_id(pairs_from_rows(fetch(_CONFIRM_MANY_SQL, {"ids": list(reservation_ids), "api_key": api_key.pk})))
    rest = _current_of(reservation_ids, done, api_key)
    expired = [rid for rid, pair in rest.items() if pair.status == PairStatus.RESERVED]
    if expired:  # RESERVED yet not confirmed by the UPDATE: its lease is over (not swept yet)
        _expired_for(api_key, execute(_RETIRE_EXPIRED_MANY_SQL, {"ids": expired}))
    return _in_request_order(reservation_ids, done, rest, answered=lambda status: status == PairStatus.USED)


def reservations_release_batch(*, reservation_ids: Sequence[uuid.UUID],
                               api_key: ApiKey) -> list[TokenPair | str]:
    """Each id as its single release, in request order: the pair (RETIRED, also when it already
    was), or ``not_found`` / ``reservation_not_active`` (a USED one). One UPDATE for the batch."""
    done = _by_id(pairs_from_rows(fetch(_RELEASE_MANY_SQL, {"ids": list(reservation_ids), "api_key": api_key.pk})))
    rest = _current_of(reservation_ids, done, api_key)
    return _in_request_order(reservation_ids, done, rest, answered=lambda status: status != PairStatus.USED)


def _in_request_order(reservation_ids: Sequence[uuid.UUID], done: dict[uuid.UUID, TokenPair],
                      rest: dict[uuid.UUID, TokenPair], *,
                      answered: Callable[[str], bool]) -> list[TokenPair | str]:
    """Each id's answer as its single form gives it: the pair when its status is ``answered`` (the
    action took effect, now or before), ``not_found`` for another key's or an unknown id, else
    ``reservation_not_active``."""
    results: list[TokenPair | str] = []
    for rid in reservation_ids:
        pair = done.get(rid) or rest.get(rid)
        if pair is None:
            results.append(NOT_FOUND)
        else:
            results.append(pair if answered(pair.status) else NOT_ACTIVE)
    return results


def _by_id(pairs: list[TokenPair]) -> dict[uuid.UUID, TokenPair]:
    return {pair.reservation_id: pair for pair in pairs if pair.reservation_id is not None}


def _current_of(reservation_ids: Sequence[uuid.UUID], done: dict[uuid.UUID, TokenPair],
                api_key: ApiKey) -> dict[uuid.UUID, TokenPair]:
    """The key's reservations among ``reservation_ids`` that the UPDATE did not touch, as they stand."""
    missing = {rid for rid in reservation_ids if rid not in done}
    return _by_id(reservations_of(reservation_ids=missing, api_key=api_key)) if missing else {}
