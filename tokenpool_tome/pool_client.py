"""TokenPoolClient: the pool approach as a library call (contract section 5).

A consuming service reserves prefetched pairs from TokenPool's HTTP API (contract section 2)
instead of calling TOME per card. Django-free, like the rest of this package (it ships in the
``tokenpool-tome-client`` wheel).

Reliability rules: those of ``http_layer`` (pooled connections, one ``timeout`` per attempt,
retries on timeouts, connection errors, 429 and 5xx with ``Retry-After`` honoured up to
``retry_after_max``, a circuit breaker so an outage costs one timeout per period instead of one per
card, the same ``X-Correlation-ID`` on every attempt), plus, here:
- every reservation carries an ``Idempotency-Key`` (the caller's, or a fresh uuid4) that its
  retries reuse, so a retry after a lost answer returns the same pair instead of taking a second;
- with ``tome=`` a TokenizationLibrary, "TokenPool unreachable" (transport errors, 5xx after the
  retries, open circuit) falls back to live NS1 + NS2 calls (``fallback.py``); 4xx answers never
  fall back.

Log lines never carry tokens, the API key or idempotency keys.
"""
from __future__ import annotations

import logging
import os
import ssl
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal, overload

import httpx

from tokenpool_tome.breaker import CircuitBreaker, log_state_changes
from tokenpool_tome.buffer import BufferClosed, ReservationBuffer
from tokenpool_tome.confirm_queue import ConfirmQueue
from tokenpool_tome.correlation import get_correlation_id
from tokenpool_tome.errors import (
    CircuitOpenError,
    IdempotencyKeyReused,
    InvalidRequest,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    ReservationNotActive,
    Throttled,
    TokenPoolError,
    TokenPoolUnavailable,
    tokenpool_error_class,
)
from tokenpool_tome.fallback import TomeFallback, pairs_by_external, pairs_by_internal
from tokenpool_tome.http_layer import (
    CORRELATION_HEADER,
    HttpClientLifecycle,
    HttpLayer,
    Refused,
    RetriesExhausted,
    Unsendable,
)
from tokenpool_tome.pool_wire import (
    MAX_IDEMPOTENCY_KEY,
    ProcessHooks,
    api_root,
    derived_key,
    gave_up,
    listed,
    log_failed_attempt,
    quoted_id,
    read_tokenpool_error,
    refusal,
    split,
)
from tokenpool_tome.reservation import CLIENT_DIRECT, Reservation, pair_from_body
from tokenpool_tome.retry_policy import RetryPolicy
from tokenpool_tome.tome_types import TokenizationLibrary, TokenPair

# Its public surface as before the split into modules (the package re-exports it).
__all__ = [
    "TokenPoolClient", "Reservation", "CLIENT_DIRECT",
    "TokenPoolError", "TokenPoolUnavailable", "InvalidRequest", "NotAuthenticated", "PermissionDenied", "NotFound",
    "ReservationNotActive", "IdempotencyKeyReused", "Throttled",
]

logger = logging.getLogger("tokenpool.client")

# Server-side batch limits (contract section 2); larger requests are split transparently.
MAX_BATCH_RESERVATIONS = 500
MAX_BATCH_TOKENS = 1000


@dataclass(frozen=True)
class _BatchResolution:
    """How one batch lookup endpoint is called, and resolved through TOME when TokenPool is down."""

    path: str
    field_name: str
    operation: str
    fallback: Callable[[TokenizationLibrary, list[str]], list[TokenPair | None]]


_LOOKUP_BATCH = _BatchResolution("lookup/batch", "internal_tokens", "lookup_batch", pairs_by_internal)
_DETOKENIZE_BATCH = _BatchResolution("detokenize/batch", "external_ref_ids", "detokenize_batch", pairs_by_external)


class TokenPoolClient(HttpClientLifecycle):
    """Client of TokenPool's HTTP API for consuming services. Thread-safe; share one per process.

    ``tome``: a TokenizationLibrary used when TokenPool is unreachable (see the module docstring).
    ``verify``: how HTTPS certificates are checked — a CA bundle's path to trust (e.g.
    ``var/caddy/pki/authorities/local/root.crt`` of ``TLS=1 make run``), True (the system's CAs), or an
    ``ssl.SSLContext``.
    ``sleep`` and ``transport`` exist for tests (no real sleeping, ``httpx.MockTransport``).
    """

    def __init__(self, base_url: str, api_key: str, *, pool: str = "default",
                 tome: TokenizationLibrary | None = None, timeout: float = 5.0,
                 max_attempts: int = 3, backoff_initial: float = 0.1, backoff_max: float = 2.0,
                 retry_after_max: float = 5.0, breaker_failure_threshold: int = 5,
                 breaker_reset_seconds: float = 5.0,
                 transport: httpx.BaseTransport | None = None,
                 verify: str | os.PathLike[str] | bool | ssl.SSLContext = True,
                 correlation_id_provider: Callable[[], str | None] = get_correlation_id,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 buffer: bool = False, buffer_seconds: float = 30.0, buffer_safety_margin: float = 60.0) -> None:
        if not base_url:
            raise ValueError("base_url is required")
        if not api_key:
            raise ValueError("api_key is required")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.pool = pool
        self.tome = tome
        self.max_attempts, self.backoff_max, self.retry_after_max = max_attempts, backoff_max, retry_after_max
        self._fallback = TomeFallback(clock=clock)
        breaker = CircuitBreaker(failure_threshold=breaker_failure_threshold, reset_seconds=breaker_reset_seconds,
                                 clock=clock, on_change=log_state_changes(logger, "tokenpool_circuit_state"))
        self._http = HttpLayer(
            base_url=api_root(base_url), authorization=f"Api-Key {api_key}", timeout=httpx.Timeout(timeout),
            retry=RetryPolicy(max_attempts, backoff_initial, backoff_max, retry_after_max), breaker=breaker,
            read_error_body=read_tokenpool_error, transport=transport,
            correlation_id_provider=correlation_id_provider, sleep=sleep,
            # A 429 is TokenPool up and pacing this key: never an outage, never a fallback.
            throttling_proves_up=True, unsendable_proves_up=True, verify=verify)
        # Generous: close() waits for a refill or flush in flight, which retries as every call does.
        close_timeout = timeout * max_attempts + retry_after_max * (max_attempts - 1)
        self._buffer = ReservationBuffer(
            fetch=self._fetch_for_buffer, release=self._release_many, buffer_seconds=buffer_seconds, wait_limit=timeout,
            safety_margin=buffer_safety_margin, clock=clock, close_timeout=close_timeout) if buffer else None
        self._confirms = ConfirmQueue(send_batch=self._confirm_many, send_one=self._confirm_one,
                                      close_timeout=close_timeout)
        self._fallbacks = 0
        # Hooks only for a client holding something: os.register_at_fork cannot be undone.
        self._process_hooks = ProcessHooks(self) if buffer else None

    def __repr__(self) -> str:  # never the API key
        return (f"TokenPoolClient(base_url={str(self._http.client.base_url)!r}, pool={self.pool!r}, "
                f"fallback={self.tome is not None})")

    # ---- reservations --------------------------------------------------------------------------

    def reserve(self, *, owner_ref: str | None = None, idempotency_key: str | None = None) -> Reservation:
        """One pair from the pool (201/200 replay); with ``tome=`` a live pair when TokenPool is down.

        Buffered (``buffer=True``): the next pair of the local buffer, without a network call; an
        ``owner_ref`` is then recorded by the confirm (the buffer's pairs were reserved without one),
        and a call with an ``idempotency_key`` bypasses the buffer (the server keeps that promise)."""
        if self._buffer is not None and idempotency_key is None:
            try:
                reservation = self._buffer.take()
            except BufferClosed:
                pass
            except TokenPoolUnavailable as exc:  # empty, and TokenPool unreachable: TOME, as unbuffered
                return self._fall_back_one(exc, owner_ref, None)
            else:
                return reservation if owner_ref is None else replace(reservation, owner_ref=owner_ref)
        key = idempotency_key or str(uuid.uuid4())
        try:
            answer = self._request("POST", "reservations", json=self._reservation_body(owner_ref),
                                   idempotency_key=key)
        except TokenPoolUnavailable as exc:
            return self._fall_back_one(exc, owner_ref, idempotency_key)
        return Reservation.from_body(answer)

    def _fall_back_one(self, exc: TokenPoolUnavailable, owner_ref: str | None,
                       idempotency_key: str | None) -> Reservation:
        direct = partial(self._fallback.reservations, count=1, pool=self.pool, owner_ref=owner_ref,
                         memo_key=(idempotency_key, 1, owner_ref) if idempotency_key else None)
        reservation = self._fallback.run(self.tome, "reserve", exc, direct)[0]
        self._fallbacks += 1  # approximate under threads: a metric, not an invariant
        return reservation

    def reserve_batch(self, count: int, *, owner_ref: str | None = None,
                      idempotency_key: str | None = None) -> list[Reservation]:
        """``count`` reservations; above 500 it takes several requests (each all-or-nothing, each with
        its own key derived from ``idempotency_key``)."""
        if count < 1:
            raise ValueError("count must be at least 1")
        key = idempotency_key or str(uuid.uuid4())
        chunks = split(count, MAX_BATCH_RESERVATIONS)
        reservations: list[Reservation] = []
        for index, size in enumerate(chunks):
            body = {**self._reservation_body(owner_ref), "count": size}
            chunk_key = key if len(chunks) == 1 else derived_key(key, index)
            try:
                answer = self._request("POST", "reservations/batch", json=body, idempotency_key=chunk_key)
            except TokenPoolUnavailable as exc:
                memo = (idempotency_key, "batch", count, index, owner_ref) if idempotency_key else None
                direct = partial(self._fallback.reservations, count=count - len(reservations), pool=self.pool,
                                 owner_ref=owner_ref, memo_key=memo)
                reservations.extend(self._fallback.run(self.tome, "reserve_batch", exc, direct))
                break
            reservations.extend(Reservation.from_body(item) for item in listed(answer, "reservations", size))
        return reservations

    @overload
    def confirm(self, reservation_id: str | Reservation, *, owner_ref: str | None = None,
                wait: Literal[True] = True) -> Reservation: ...

    @overload
    def confirm(self, reservation_id: str | Reservation, *, owner_ref: str | None = None,
                wait: Literal[False]) -> None: ...

    def confirm(self, reservation_id: str | Reservation, *, owner_ref: str | None = None,
                wait: bool = True) -> Reservation | None:
        """Mark the reservation USED (repeating is harmless). A ``client_direct`` Reservation has no
        server side: it comes back marked USED locally, without a request.

        ``wait=False`` queues the confirmation and returns None at once; the queue is sent through
        ``reservations/confirm/batch`` at least once a second and on ``close()`` (``confirm_queue``)."""
        if isinstance(reservation_id, Reservation):
            if reservation_id.is_client_direct:
                reservation = reservation_id
                return None if not wait else replace(
                    reservation, status="USED", used_at=datetime.now(UTC),
                    owner_ref=owner_ref if owner_ref is not None else reservation.owner_ref)
            if owner_ref is None and self._buffer is not None:
                owner_ref = reservation_id.owner_ref  # set by a buffered reserve(owner_ref=...)
        if not wait:
            if self._process_hooks is None:
                self._process_hooks = ProcessHooks(self)  # queued confirmations are sent at exit
            if not self._confirms.put(quoted_id(reservation_id), owner_ref):
                self._confirm_one(quoted_id(reservation_id), owner_ref)  # closed queue: sent now
            return None
        return self._confirm_one(quoted_id(reservation_id), owner_ref)

    def _confirm_one(self, reservation_id: str, owner_ref: str | None) -> Reservation:
        body = {"owner_ref": owner_ref} if owner_ref is not None else {}
        # Confirm is idempotent by contract, so retrying it is safe.
        answer = self._request("POST", f"reservations/{reservation_id}/confirm", json=body)
        return Reservation.from_body(answer)

    def release(self, reservation_id: str | Reservation) -> Reservation:
        """Give the reservation back: RETIRED, never re-issued. A ``client_direct`` Reservation comes
        back marked RETIRED locally (its pair was never stored by TokenPool)."""
        if isinstance(reservation_id, Reservation) and reservation_id.is_client_direct:
            return replace(reservation_id, status="RETIRED")
        answer = self._request("POST", f"reservations/{quoted_id(reservation_id)}/release", json={})
        return Reservation.from_body(answer)

    def get_reservation(self, reservation_id: str | Reservation) -> Reservation:
        """The reservation as TokenPool has it now (404 → ``NotFound``). No fallback."""
        return Reservation.from_body(self._request("GET", f"reservations/{quoted_id(reservation_id)}"))

    # ---- lookups -------------------------------------------------------------------------------

    def lookup(self, internal_token: str) -> TokenPair | None:
        """internal token → its pair, ``None`` when unknown. Falls back to an NS2 lookup."""
        try:
            answer = self._request("POST", "lookup", json={"internal_token": internal_token}, not_found_ok=True)
        except TokenPoolUnavailable as exc:
            external = self._fallback.run(self.tome, "lookup", exc, lambda tome: tome.external_for(internal_token))
            return TokenPair(internal_token, external, source=CLIENT_DIRECT) if external is not None else None
        return None if answer is None else pair_from_body(answer)

    def detokenize(self, external_ref_id: str) -> TokenPair | None:
        """external ref → its pair, ``None`` when unknown. Falls back to an NS2 detokenize."""
        body = {"external_ref_id": external_ref_id}
        try:
            answer = self._request("POST", "detokenize", json=body, not_found_ok=True)
        except TokenPoolUnavailable as exc:
            internal = self._fallback.run(self.tome, "detokenize", exc, lambda tome: tome.internal_for(external_ref_id))
            return TokenPair(internal, external_ref_id, source=CLIENT_DIRECT) if internal is not None else None
        return None if answer is None else pair_from_body(answer)

    def lookup_batch(self, internal_tokens: Sequence[str]) -> list[TokenPair | None]:
        """One entry per token, in order; ``None`` for unknown ones."""
        return self._resolve_batch(internal_tokens, _LOOKUP_BATCH)

    def detokenize_batch(self, external_ref_ids: Sequence[str]) -> list[TokenPair | None]:
        """One entry per external ref, in order; ``None`` for unknown ones."""
        return self._resolve_batch(external_ref_ids, _DETOKENIZE_BATCH)

    # ---- the buffer's lifecycle ----------------------------------------------------------------

    @property
    def metrics(self) -> dict[str, int]:
        """Client-side counters: ``handed_out`` (from the buffer), ``refills``, ``waste`` (stale or
        unreleasable pairs), ``released`` (unused pairs given back by close), ``buffered`` (held
        now), ``fallbacks`` (TOME reservations), ``confirms_queued/sent/failed/lost``."""
        counters = dict(self._buffer.counters) if self._buffer is not None else {
            "handed_out": 0, "refills": 0, "waste": 0, "released": 0}
        counters.update(self._confirms.counters, buffered=self._buffer.held if self._buffer is not None else 0,
                        fallbacks=self._fallbacks, confirms_queued=self._confirms.queued)
        return counters

    def close(self) -> None:
        """Send the queued confirmations, release the buffer's unused pairs (one call per 500), then
        close the connections. Also run by the context manager's exit and at interpreter exit."""
        if self._process_hooks is not None:
            self._process_hooks.closed()
        self._confirms.close()
        if self._buffer is not None:
            self._buffer.close()
        super().close()

    def after_fork_in_child(self) -> None:
        """Run in a forked child (``os.register_at_fork``): its own connections, an empty buffer
        and confirmation queue; the parent's pairs stay the parent's."""
        self._http.after_fork_in_child()
        self._confirms.after_fork_in_child()
        if self._buffer is not None:
            self._buffer.after_fork_in_child()

    def _fetch_for_buffer(self, count: int) -> list[Reservation]:
        """One batch for the buffer, never from the TOME fallback (the buffer decides that)."""
        answer = self._request("POST", "reservations/batch", json={"pool": self.pool, "count": count},
                               idempotency_key=str(uuid.uuid4()))
        return [Reservation.from_body(item) for item in listed(answer, "reservations", count)]

    def _confirm_many(self, reservation_ids: list[str]) -> list[Any]:
        return listed(self._request("POST", "reservations/confirm/batch", json={"reservation_ids": reservation_ids}),
                      "results", len(reservation_ids))

    def _release_many(self, reservation_ids: list[str]) -> None:
        for start in range(0, len(reservation_ids), MAX_BATCH_RESERVATIONS):
            chunk = reservation_ids[start:start + MAX_BATCH_RESERVATIONS]
            try:
                self._request("POST", "reservations/release/batch", json={"reservation_ids": chunk})
            except NotFound:  # a server without release/batch (not in the contract): one by one
                for rid in chunk:
                    self.release(rid)

    # ---- internals -----------------------------------------------------------------------------

    def _reservation_body(self, owner_ref: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"pool": self.pool}
        if owner_ref is not None:
            body["owner_ref"] = owner_ref
        return body

    def _resolve_batch(self, items: Sequence[str], how: _BatchResolution) -> list[TokenPair | None]:
        if isinstance(items, (str, bytes)):
            raise TypeError("expected a sequence of strings, got a single string")
        results: list[TokenPair | None] = []
        for start in range(0, len(items), MAX_BATCH_TOKENS):
            results.extend(self._resolve_chunk(list(items[start:start + MAX_BATCH_TOKENS]), how))
        return results

    def _resolve_chunk(self, chunk: list[str], how: _BatchResolution) -> list[TokenPair | None]:
        try:
            answer = self._request("POST", how.path, json={how.field_name: chunk})
        except TokenPoolUnavailable as exc:
            return self._fallback.run(self.tome, how.operation, exc, lambda tome: how.fallback(tome, chunk))
        return [None if isinstance(entry, dict) and entry.get("code") == "not_found" else pair_from_body(entry)
                for entry in listed(answer, "results", len(chunk))]

    def _request(self, method: str, path: str, *, json: Any = None, idempotency_key: str | None = None,
                 not_found_ok: bool = False) -> Any:
        """One logical call through the shared HTTP layer, its failures told as TokenPool errors.
        Returns the JSON body (``None`` for a 404 ``not_found`` when ``not_found_ok``)."""
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            raise ValueError("idempotency_key must be 1-255 characters")
        headers = self._http.headers(idempotency_key)
        try:
            response = self._http.send(method, path, json=json, headers=headers,
                                       observe=partial(log_failed_attempt, path))
        except CircuitOpenError as exc:
            raise TokenPoolUnavailable("circuit breaker open after repeated failures", code="circuit_open",
                                       correlation_id=headers[CORRELATION_HEADER],
                                       retry_after=exc.retry_after) from None
        except RetriesExhausted as exhausted:
            raise gave_up(exhausted.attempt) from None
        except Refused as refused:
            if not_found_ok and issubclass(tokenpool_error_class(refused.answer.status, refused.answer.code),
                                           NotFound):
                return None
            raise refusal(refused.answer) from None
        except Unsendable as unsendable:
            # Misconfiguration (bad URL, unsupported scheme...): repeating cannot help.
            raise TokenPoolError(f"request could not be sent ({unsendable.attempt.error})", code="client_error",
                                 correlation_id=headers[CORRELATION_HEADER]) from None
        try:
            return response.json()
        except ValueError:
            raise TokenPoolError("response body is not JSON", code="malformed_response",
                                 status=response.status_code,
                                 correlation_id=response.headers.get(CORRELATION_HEADER)) from None
