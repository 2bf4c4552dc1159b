"""Writes of the pool room: reservations and their lifecycle, the bulk insert, lookup/detokenize.

- ``claim.py``: the reservation claim, the one SQL statement the hot path runs;
- ``reservations.py``: reservation create / batch create, idempotency and the live fallback;
- ``lifecycle.py``: confirm, release and the lease-expiry sweep;
- ``bulk_insert.py``: fresh pairs from the refill;
- ``lookups.py``: lookup / detokenize and their audit records;
- ``rows.py`` and ``tome.py``: the shared row mapping and the one TOME error → domain error mapping.

Transactions are held exactly around what must commit together and never around a TOME call: a
transaction left open while waiting on the network holds back VACUUM for every other reservation
(docs/architecture.md, design notes). The public names are re-exported here."""
from pool.services.bulk_insert import pairs_insert_bulk, pairs_insert_staged
from pool.services.claim import CLAIM_EXACTLY_SQL, CLAIM_ONE_SQL, CLAIM_PICK_SQL, claim_pairs
from pool.services.lifecycle import (
    MAX_BATCH_TRANSITIONS,
    NOT_ACTIVE,
    NOT_FOUND,
    reservation_confirm,
    reservation_current,
    reservation_release,
    reservations_confirm_batch,
    reservations_expire,
    reservations_release_batch,
)
from pool.services.lookups import (
    PairResult,
    audit_token_digest,
    pair_detokenize,
    pair_detokenize_batch,
    pair_lookup,
    pair_lookup_batch,
)
from pool.services.reservations import (
    MAX_BATCH_RESERVATIONS,
    request_fingerprint,
    reservation_batch_create,
    reservation_create,
)

__all__ = [
    "CLAIM_EXACTLY_SQL",
    "CLAIM_ONE_SQL",
    "CLAIM_PICK_SQL",
    "MAX_BATCH_RESERVATIONS",
    "MAX_BATCH_TRANSITIONS",
    "NOT_ACTIVE",
    "NOT_FOUND",
    "PairResult",
    "audit_token_digest",
    "claim_pairs",
    "pair_detokenize",
    "pair_detokenize_batch",
    "pair_lookup",
    "pair_lookup_batch",
    "pairs_insert_bulk",
    "pairs_insert_staged",
    "request_fingerprint",
    "reservation_batch_create",
    "reservation_confirm",
    "reservation_create",
    "reservation_current",
    "reservation_release",
    "reservations_confirm_batch",
    "reservations_expire",
    "reservations_release_batch",
]
