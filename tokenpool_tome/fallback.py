"""TokenPoolClient's way around an unreachable TokenPool: live NS1 + NS2 calls through a
TokenizationLibrary (contract section 5), logged without flooding the logs during an outage.

Apart from the client because it holds state of its own (the idempotency memo, the log pacing)
and never talks to TokenPool.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from tokenpool_tome.correlation import correlation_scope, get_correlation_id
from tokenpool_tome.errors import TokenPoolUnavailable, TomeError
from tokenpool_tome.reservation import CLIENT_DIRECT, Reservation
from tokenpool_tome.tome_types import TokenizationLibrary, TokenPair

__all__ = ["FALLBACK_LOG_INTERVAL_SECONDS", "TomeFallback", "pairs_by_external", "pairs_by_internal"]

logger = logging.getLogger("tokenpool.client")

T = TypeVar("T")

# Fallback reservations remembered per caller-given idempotency key (see TomeFallback.reservations).
_MEMO_SIZE = 1024
# An outage must not turn into one warning per card: one per operation per interval, with a count.
FALLBACK_LOG_INTERVAL_SECONDS = 10.0


class TomeFallback:
    """Runs an operation against a TokenizationLibrary in place of TokenPool, or re-raises when the
    client has none."""

    def __init__(self, *, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._memo: OrderedDict[Hashable, list[Reservation]] = OrderedDict()
        self._memo_lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._logged_at: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def run(self, tome: TokenizationLibrary | None, operation: str, error: TokenPoolUnavailable,
            call: Callable[[TokenizationLibrary], T]) -> T:
        """``call(tome)`` for the failed ``operation``; ``error`` is raised when there is no tome,
        and is the one error raised (with TOME's failure as its cause) when TOME fails too."""
        if tome is None:
            raise error
        self._log(operation, error)
        try:
            if get_correlation_id() is None and error.correlation_id:
                # The TOME calls carry the failed request's id, so one id follows the card end to end.
                with correlation_scope(error.correlation_id):
                    return call(tome)
            return call(tome)
        except TomeError as tome_error:
            raise TokenPoolUnavailable(
                f"TokenPool unavailable ({error.code}) and the TOME fallback failed: "
                f"{type(tome_error).__name__}", code=error.code, status=error.status,
                correlation_id=error.correlation_id, retry_after=error.retry_after) from tome_error

    def reservations(self, tome: TokenizationLibrary, count: int, *, pool: str, owner_ref: str | None,
                     memo_key: Hashable | None) -> list[Reservation]:
        """Live pairs (NS1 generate + NS2 tokenize) shaped as client-side reservations.

        With the caller's own idempotency key (``memo_key``), the answer is remembered in this
        process, so the caller's retry while TokenPool is still down gets the same pair back instead
        of a second one, as TokenPool itself would do. Best effort: bounded, per process, and once
        TokenPool is back the key reaches the server, which has never seen this pair.
        """
        if memo_key is not None:
            with self._memo_lock:
                if memo_key in self._memo:
                    self._memo.move_to_end(memo_key)
                    return list(self._memo[memo_key])
        now = datetime.now(UTC)
        made = [Reservation(reservation_id=None, pool=pool, internal_token=p.internal_token,
                            external_ref_id=p.external_ref_id, status="RESERVED", source=CLIENT_DIRECT,
                            owner_ref=owner_ref, reserved_at=now, expires_at=None, used_at=None)
                for p in tome.generate_pairs(count)]
        if memo_key is not None:
            with self._memo_lock:
                self._memo[memo_key] = made
                while len(self._memo) > _MEMO_SIZE:
                    self._memo.popitem(last=False)
        return list(made)

    def _log(self, operation: str, error: TokenPoolUnavailable) -> None:
        now = self._clock()
        with self._log_lock:
            last = self._logged_at.get(operation)
            if last is not None and now - last < FALLBACK_LOG_INTERVAL_SECONDS:
                self._unlogged[operation] = self._unlogged.get(operation, 0) + 1
                warn, unlogged = False, 0
            else:
                self._logged_at[operation] = now
                warn, unlogged = True, self._unlogged.pop(operation, 0)
        extra = {"operation": operation, "reason": error.code, "status_code": error.status,
                 "correlation_id": error.correlation_id}
        if warn:
            logger.warning("tokenpool_fallback_to_tome", extra={**extra, "fallbacks_not_logged": unlogged})
        else:
            logger.debug("tokenpool_fallback_to_tome", extra=extra)


def pairs_by_internal(tome: TokenizationLibrary, internal_tokens: Sequence[str]) -> list[TokenPair | None]:
    """``lookup_batch``'s fallback: an NS2 lookup of each internal token."""
    externals = tome.external_for_batch(internal_tokens)
    return [TokenPair(t, e, source=CLIENT_DIRECT) if e is not None else None
            for t, e in zip(internal_tokens, externals, strict=True)]


def pairs_by_external(tome: TokenizationLibrary, external_ref_ids: Sequence[str]) -> list[TokenPair | None]:
    """``detokenize_batch``'s fallback: an NS2 detokenize of each external ref."""
    internals = tome.internal_for_batch(external_ref_ids)
    return [TokenPair(i, e, source=CLIENT_DIRECT) if i is not None else None
            for e, i in zip(external_ref_ids, internals, strict=True)]
