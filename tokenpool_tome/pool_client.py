"""TokenPoolClient: the pool approach as a library call (contract section 5).

A consuming service reserves prefetched pairs from TokenPool's HTTP API (contract section 2)
instead of calling TOME per card. Django-free, like the rest of this package (it ships in the
``tokenpool-tome-client`` wheel).

Reliability rules, all in ``TokenPoolClient._request``:
- one long-lived ``httpx.Client`` (pooled keep-alive connections, one ``timeout`` per request);
- tenacity retries with exponential backoff and jitter on timeouts, connection errors, 429 and
  5xx; ``Retry-After`` is honoured up to ``retry_after_max``; other 4xx are never retried;
- every reservation carries an ``Idempotency-Key`` (the caller's, or a fresh uuid4) that its
  retries reuse, so a retry after a lost answer returns the same pair instead of taking a second;
- every request carries ``X-Correlation-ID`` (the bound id, or a fresh one), the same on retries;
- a circuit breaker over logical calls, so an outage of TokenPool costs one timeout per period
  instead of one per card;
- with ``tome=`` a TokenizationLibrary, "TokenPool unreachable" (transport errors, 5xx after the
  retries, open circuit) falls back to live NS1 + NS2 calls; 4xx answers never fall back.

Log lines never carry tokens, the API key or idempotency keys.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random

from tokenpool_tome.breaker import CircuitBreaker
from tokenpool_tome.client import TokenizationLibrary, TokenPair, __version__
from tokenpool_tome.correlation import correlation_scope, get_correlation_id, new_correlation_id
from tokenpool_tome.errors import CircuitOpenError, TomeError
from tokenpool_tome.retry_policy import RETRYABLE_TRANSPORT_ERRORS, retry_after_seconds, retry_wait

__all__ = [
    "CLIENT_DIRECT",
    "IdempotencyKeyReused",
    "InvalidRequest",
    "NotAuthenticated",
    "NotFound",
    "PermissionDenied",
    "Reservation",
    "ReservationNotActive",
    "Throttled",
    "TokenPoolClient",
    "TokenPoolError",
    "TokenPoolUnavailable",
]

logger = logging.getLogger("tokenpool.client")

T = TypeVar("T")

#: ``source`` of a reservation or pair made by the client's own TOME fallback (never by the server).
CLIENT_DIRECT = "client_direct"

# Server-side batch limits (contract section 2); larger requests are split transparently.
MAX_BATCH_RESERVATIONS = 500
MAX_BATCH_TOKENS = 1000
_MAX_IDEMPOTENCY_KEY = 255
# Fallback reservations remembered per caller-given idempotency key (see TokenPoolClient._direct).
_DIRECT_MEMO_SIZE = 1024
# An outage must not turn into one warning per card: one per operation per interval, with a count.
FALLBACK_LOG_INTERVAL_SECONDS = 10.0

# ---- errors ----------------------------------------------------------------------------------------

class TokenPoolError(Exception):
    """TokenPool refused a request, or could not be reached. ``code`` is the contract's error code.

    ``status`` is the HTTP status (None when no answer arrived), ``detail`` the server's sentence,
    ``correlation_id`` the id of the failed request (the server's, when it answered), ``errors``
    the per-field messages of a 400.
    """

    def __init__(self, detail: str, *, code: str, status: int | None = None,
                 correlation_id: str | None = None, errors: dict[str, Any] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"TokenPool {status or '-'} {code}: {detail}")
        self.code = code
        self.detail = detail
        self.status = status
        self.correlation_id = correlation_id
        self.errors = errors or {}
        self.retry_after = retry_after


class TokenPoolUnavailable(TokenPoolError):
    """TokenPool could not answer (connection error, timeout, 5xx after the retries, open circuit)
    and no ``tome=`` fallback was configured (or the operation has none, e.g. confirm)."""


class InvalidRequest(TokenPoolError):
    """400 ``invalid_request``; ``errors`` names the offending fields."""


class NotAuthenticated(TokenPoolError):
    """401 ``not_authenticated``: missing, unknown or revoked API key."""


class PermissionDenied(TokenPoolError):
    """403 ``permission_denied``: the key lacks the endpoint's scope."""


class NotFound(TokenPoolError):
    """404 ``not_found`` for a reservation or a pool (lookups answer ``None`` instead)."""


class ReservationNotActive(TokenPoolError):
    """409 ``reservation_not_active``: confirming a RETIRED or releasing a USED reservation."""


class IdempotencyKeyReused(TokenPoolError):
    """422 ``idempotency_key_reused``: the key was used before with a different body."""


class Throttled(TokenPoolError):
    """429 ``throttled`` still answered after the retries. Deliberately no fallback: TokenPool is up
    and pacing this key; going around it to TOME would defeat the limit."""


_ERRORS_BY_CODE: dict[str, type[TokenPoolError]] = {
    "invalid_request": InvalidRequest,
    "not_authenticated": NotAuthenticated,
    "permission_denied": PermissionDenied,
    "not_found": NotFound,
    "reservation_not_active": ReservationNotActive,
    "idempotency_key_reused": IdempotencyKeyReused,
    "throttled": Throttled,
}


# ---- results ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Reservation:
    """A reservation body (contract section 2) with parsed datetimes.

    ``source`` is ``pool`` or ``direct`` (made by the server) or ``client_direct`` (made by this
    client's TOME fallback: then ``reservation_id`` and ``expires_at`` are None, because no
    server-side reservation exists). Tokens are left out of ``repr`` so a logged reservation never
    leaks them.
    """

    reservation_id: str | None
    pool: str
    internal_token: str = field(repr=False)
    external_ref_id: str = field(repr=False)
    status: str  # RESERVED | USED | RETIRED
    source: str  # pool | direct | client_direct
    owner_ref: str | None
    reserved_at: datetime
    expires_at: datetime | None
    used_at: datetime | None

    @property
    def pair(self) -> TokenPair:
        return TokenPair(self.internal_token, self.external_ref_id, status=self.status, source=self.source)

    @property
    def is_client_direct(self) -> bool:
        return self.source == CLIENT_DIRECT

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Reservation:
        try:
            return cls(
                reservation_id=str(body["reservation_id"]),
                pool=str(body["pool"]),
                internal_token=str(body["internal_token"]),
                external_ref_id=str(body["external_ref_id"]),
                status=str(body["status"]),
                source=str(body["source"]),
                owner_ref=body.get("owner_ref"),
                reserved_at=_parse_datetime(body["reserved_at"]),
                expires_at=_parse_datetime(body["expires_at"]),
                used_at=_parse_datetime(body.get("used_at")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TokenPoolError(f"malformed reservation in the response ({type(exc).__name__})",
                                 code="malformed_response") from None


def _parse_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("datetime must be a string")
    # Python 3.11's fromisoformat accepts the trailing "Z" DRF writes.
    return datetime.fromisoformat(value)


def _pair_from_body(body: Any) -> TokenPair:
    try:
        return TokenPair(str(body["internal_token"]), str(body["external_ref_id"]),
                         status=body.get("status"), source=body.get("source"))
    except (KeyError, TypeError) as exc:
        raise TokenPoolError(f"malformed pair in the response ({type(exc).__name__})",
                             code="malformed_response") from None


class _Retryable(Exception):
    """An attempt that may succeed if repeated (timeout, connection error, 429, 5xx)."""

    def __init__(self, error: TokenPoolError) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = error.retry_after  # read by the shared retry_wait


# ---- the client ------------------------------------------------------------------------------------

class TokenPoolClient:
    """Client of TokenPool's HTTP API for consuming services. Thread-safe; share one per process.

    ``tome``: a TokenizationLibrary used when TokenPool is unreachable (see the module docstring).
    ``sleep`` and ``transport`` exist for tests (no real sleeping, ``httpx.MockTransport``).
    """

    def __init__(self, base_url: str, api_key: str, *, pool: str = "default",
                 tome: TokenizationLibrary | None = None, timeout: float = 5.0,
                 max_attempts: int = 3, backoff_initial: float = 0.1, backoff_max: float = 2.0,
                 retry_after_max: float = 5.0, breaker_failure_threshold: int = 5,
                 breaker_reset_seconds: float = 5.0,
                 transport: httpx.BaseTransport | None = None,
                 correlation_id_provider: Callable[[], str | None] = get_correlation_id,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
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
        self._direct_memo: OrderedDict[tuple[Any, ...], list[Reservation]] = OrderedDict()
        self._direct_memo_lock = threading.Lock()
        self._clock = clock
        self._fallback_log_lock = threading.Lock()
        self._fallback_logged_at: dict[str, float] = {}
        self._fallback_unlogged: dict[str, int] = {}
        self.max_attempts = max_attempts
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self._correlation_id_provider = correlation_id_provider
        self._sleep = sleep
        self._backoff = wait_exponential(multiplier=backoff_initial, max=backoff_max) + wait_random(0, backoff_initial)
        self._breaker = CircuitBreaker(failure_threshold=breaker_failure_threshold,
                                       reset_seconds=breaker_reset_seconds, clock=clock,
                                       on_change=self._log_breaker_change)
        self._http = httpx.Client(
            base_url=_api_root(base_url),
            transport=transport,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30.0),
            headers={"Authorization": f"Api-Key {api_key}", "Accept": "application/json",
                     "User-Agent": f"tokenpool-tome-client/{__version__}"},
            follow_redirects=False,
        )

    def __repr__(self) -> str:  # never the API key
        return (f"TokenPoolClient(base_url={str(self._http.base_url)!r}, pool={self.pool!r}, "
                f"fallback={self.tome is not None})")

    # ---- reservations --------------------------------------------------------------------------

    def reserve(self, *, owner_ref: str | None = None, idempotency_key: str | None = None) -> Reservation:
        """One pair from the pool (201/200 replay); with ``tome=`` a live pair when TokenPool is down."""
        body = self._reservation_body(owner_ref)
        key = idempotency_key or str(uuid.uuid4())
        try:
            answer = self._request("POST", "reservations", json=body, idempotency_key=key)
        except TokenPoolUnavailable as exc:
            memo = (idempotency_key, 1, owner_ref) if idempotency_key else None
            return self._fallback("reserve", exc, lambda tome: self._direct(tome, 1, owner_ref, memo))[0]
        return Reservation.from_body(answer)

    def reserve_batch(self, count: int, *, owner_ref: str | None = None,
                      idempotency_key: str | None = None) -> list[Reservation]:
        """``count`` reservations; above 500 it takes several requests (each all-or-nothing, each with
        its own key derived from ``idempotency_key``)."""
        if count < 1:
            raise ValueError("count must be at least 1")
        key = idempotency_key or str(uuid.uuid4())
        chunks = _split(count, MAX_BATCH_RESERVATIONS)
        reservations: list[Reservation] = []
        for index, size in enumerate(chunks):
            body = {**self._reservation_body(owner_ref), "count": size}
            chunk_key = key if len(chunks) == 1 else _derived_key(key, index)
            try:
                answer = self._request("POST", "reservations/batch", json=body, idempotency_key=chunk_key)
            except TokenPoolUnavailable as exc:
                rest = count - len(reservations)
                memo = (idempotency_key, "batch", count, index, owner_ref) if idempotency_key else None
                reservations.extend(self._fallback("reserve_batch", exc,
                                                   lambda tome, n=rest, m=memo: self._direct(tome, n, owner_ref, m)))
                break
            try:
                items = answer["reservations"]
                if not isinstance(items, list) or len(items) != size:
                    raise TypeError
            except (KeyError, TypeError):
                raise TokenPoolError(f"expected {size} reservations in the response",
                                     code="malformed_response") from None
            reservations.extend(Reservation.from_body(item) for item in items)
        return reservations

    def confirm(self, reservation_id: str | Reservation, *, owner_ref: str | None = None) -> Reservation:
        """Mark the reservation USED (repeating is harmless). A ``client_direct`` Reservation has no
        server side: it comes back marked USED locally, without a request."""
        if isinstance(reservation_id, Reservation) and reservation_id.is_client_direct:
            reservation = reservation_id
            return replace(reservation, status="USED", used_at=datetime.now(UTC),
                           owner_ref=owner_ref if owner_ref is not None else reservation.owner_ref)
        body = {"owner_ref": owner_ref} if owner_ref is not None else {}
        # Confirm is idempotent by contract, so retrying it is safe.
        answer = self._request("POST", f"reservations/{self._id(reservation_id)}/confirm", json=body)
        return Reservation.from_body(answer)

    def release(self, reservation_id: str | Reservation) -> Reservation:
        """Give the reservation back: RETIRED, never re-issued. A ``client_direct`` Reservation comes
        back marked RETIRED locally (its pair was never stored by TokenPool)."""
        if isinstance(reservation_id, Reservation) and reservation_id.is_client_direct:
            return replace(reservation_id, status="RETIRED")
        answer = self._request("POST", f"reservations/{self._id(reservation_id)}/release", json={})
        return Reservation.from_body(answer)

    def get_reservation(self, reservation_id: str | Reservation) -> Reservation:
        """The reservation as TokenPool has it now (404 → ``NotFound``). No fallback."""
        return Reservation.from_body(self._request("GET", f"reservations/{self._id(reservation_id)}"))

    # ---- lookups -------------------------------------------------------------------------------

    def lookup(self, internal_token: str) -> TokenPair | None:
        """internal token → its pair, ``None`` when unknown. Falls back to an NS2 lookup."""
        try:
            answer = self._request("POST", "lookup", json={"internal_token": internal_token}, not_found_ok=True)
        except TokenPoolUnavailable as exc:
            external = self._fallback("lookup", exc, lambda tome: tome.external_for(internal_token))
            return TokenPair(internal_token, external, source=CLIENT_DIRECT) if external is not None else None
        return None if answer is None else _pair_from_body(answer)

    def detokenize(self, external_ref_id: str) -> TokenPair | None:
        """external ref → its pair, ``None`` when unknown. Falls back to an NS2 detokenize."""
        try:
            answer = self._request("POST", "detokenize", json={"external_ref_id": external_ref_id},
                                   not_found_ok=True)
        except TokenPoolUnavailable as exc:
            internal = self._fallback("detokenize", exc, lambda tome: tome.internal_for(external_ref_id))
            return TokenPair(internal, external_ref_id, source=CLIENT_DIRECT) if internal is not None else None
        return None if answer is None else _pair_from_body(answer)

    def lookup_batch(self, internal_tokens: Sequence[str]) -> list[TokenPair | None]:
        """One entry per token, in order; ``None`` for unknown ones."""
        return self._resolve_batch(internal_tokens, path="lookup/batch", field_name="internal_tokens",
                                   operation="lookup_batch",
                                   fallback=lambda tome, chunk: [
                                       TokenPair(t, e, source=CLIENT_DIRECT) if e is not None else None
                                       for t, e in zip(chunk, tome.external_for_batch(chunk))])

    def detokenize_batch(self, external_ref_ids: Sequence[str]) -> list[TokenPair | None]:
        """One entry per external ref, in order; ``None`` for unknown ones."""
        return self._resolve_batch(external_ref_ids, path="detokenize/batch", field_name="external_ref_ids",
                                   operation="detokenize_batch",
                                   fallback=lambda tome, chunk: [
                                       TokenPair(i, e, source=CLIENT_DIRECT) if i is not None else None
                                       for e, i in zip(chunk, tome.internal_for_batch(chunk))])

    # ---- lifecycle -----------------------------------------------------------------------------

    @property
    def breaker_state(self) -> str:
        return self._breaker.state

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- internals -----------------------------------------------------------------------------

    def _reservation_body(self, owner_ref: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"pool": self.pool}
        if owner_ref is not None:
            body["owner_ref"] = owner_ref
        return body

    @staticmethod
    def _id(reservation_id: str | Reservation) -> str:
        if isinstance(reservation_id, Reservation):
            reservation_id = reservation_id.reservation_id  # type: ignore[assignment]
        if not reservation_id:
            raise ValueError("no reservation id: a client_direct reservation is confirmed or released "
                             "by passing the Reservation itself")
        return quote(str(reservation_id), safe="")

    def _resolve_batch(self, items: Sequence[str], *, path: str, field_name: str, operation: str,
                       fallback: Callable[[TokenizationLibrary, list[str]], list[TokenPair | None]],
                       ) -> list[TokenPair | None]:
        if isinstance(items, (str, bytes)):
            raise TypeError("expected a sequence of strings, got a single string")
        results: list[TokenPair | None] = []
        for start in range(0, len(items), MAX_BATCH_TOKENS):
            chunk = list(items[start:start + MAX_BATCH_TOKENS])
            try:
                answer = self._request("POST", path, json={field_name: chunk})
            except TokenPoolUnavailable as exc:
                results.extend(self._fallback(operation, exc, lambda tome, chunk=chunk: fallback(tome, chunk)))
                continue
            try:
                entries = answer["results"]
                if not isinstance(entries, list) or len(entries) != len(chunk):
                    raise TypeError
            except (KeyError, TypeError):
                raise TokenPoolError(f"expected {len(chunk)} results in the response",
                                     code="malformed_response") from None
            results.extend(None if isinstance(e, dict) and e.get("code") == "not_found" else _pair_from_body(e)
                           for e in entries)
        return results

    def _direct(self, tome: TokenizationLibrary, count: int, owner_ref: str | None,
                memo_key: tuple[Any, ...] | None) -> list[Reservation]:
        """Live pairs (NS1 generate + NS2 tokenize) shaped as client-side reservations.

        With the caller's own idempotency key (``memo_key``), the answer is remembered in this
        process, so the caller's retry while TokenPool is still down gets the same pair back instead
        of a second one, as TokenPool itself would do. Best effort: bounded, per process, and once
        TokenPool is back the key reaches the server, which has never seen this pair.
        """
        if memo_key is not None:
            with self._direct_memo_lock:
                if memo_key in self._direct_memo:
                    self._direct_memo.move_to_end(memo_key)
                    return list(self._direct_memo[memo_key])
        now = datetime.now(UTC)
        made = [Reservation(reservation_id=None, pool=self.pool, internal_token=p.internal_token,
                            external_ref_id=p.external_ref_id, status="RESERVED", source=CLIENT_DIRECT,
                            owner_ref=owner_ref, reserved_at=now, expires_at=None, used_at=None)
                for p in tome.generate_pairs(count)]
        if memo_key is not None:
            with self._direct_memo_lock:
                self._direct_memo[memo_key] = made
                while len(self._direct_memo) > _DIRECT_MEMO_SIZE:
                    self._direct_memo.popitem(last=False)
        return list(made)

    def _fallback(self, operation: str, error: TokenPoolUnavailable,
                  call: Callable[[TokenizationLibrary], T]) -> T:
        if self.tome is None:
            raise error
        self._log_fallback(operation, error)
        try:
            if get_correlation_id() is None and error.correlation_id:
                # The TOME calls carry the failed request's id, so one id follows the card end to end.
                with correlation_scope(error.correlation_id):
                    return call(self.tome)
            return call(self.tome)
        except TomeError as tome_error:
            # Both sides are down: one error, with TOME's failure as its cause.
            raise TokenPoolUnavailable(
                f"TokenPool unavailable ({error.code}) and the TOME fallback failed: "
                f"{type(tome_error).__name__}", code=error.code, status=error.status,
                correlation_id=error.correlation_id, retry_after=error.retry_after) from tome_error

    def _log_fallback(self, operation: str, error: TokenPoolUnavailable) -> None:
        now = self._clock()
        with self._fallback_log_lock:
            last = self._fallback_logged_at.get(operation)
            if last is not None and now - last < FALLBACK_LOG_INTERVAL_SECONDS:
                self._fallback_unlogged[operation] = self._fallback_unlogged.get(operation, 0) + 1
                warn, unlogged = False, 0
            else:
                self._fallback_logged_at[operation] = now
                warn, unlogged = True, self._fallback_unlogged.pop(operation, 0)
        extra = {"operation": operation, "reason": error.code, "status_code": error.status,
                 "correlation_id": error.correlation_id}
        if warn:
            logger.warning("tokenpool_fallback_to_tome", extra={**extra, "fallbacks_not_logged": unlogged})
        else:
            logger.debug("tokenpool_fallback_to_tome", extra=extra)

    def _request(self, method: str, path: str, *, json: Any = None, idempotency_key: str | None = None,
                 not_found_ok: bool = False) -> Any:
        """One logical call: breaker, attempts with retries, error mapping. Returns the JSON body
        (``None`` for a 404 ``not_found`` when ``not_found_ok``)."""
        correlation_id = self._correlation_id_provider() or new_correlation_id()
        headers = {"X-Correlation-ID": correlation_id}
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= _MAX_IDEMPOTENCY_KEY:
                raise ValueError("idempotency_key must be 1-255 characters")
            headers["Idempotency-Key"] = idempotency_key
        try:
            self._breaker.before_call()
        except CircuitOpenError as exc:
            raise TokenPoolUnavailable("circuit breaker open after repeated failures", code="circuit_open",
                                       correlation_id=correlation_id, retry_after=exc.retry_after) from None
        attempts = [0]
        retrying = Retrying(stop=stop_after_attempt(self.max_attempts), wait=self._wait,
                            retry=retry_if_exception_type(_Retryable), sleep=self._sleep, reraise=True)
        try:
            response = retrying(self._attempt, method, path, json=json, headers=headers, attempts=attempts)
        except _Retryable as exc:
            error = exc.error
            if error.status == 429:
                # Throttled is TokenPool answering, so it is up: no breaker failure, no fallback.
                self._breaker.record_success()
                raise error from None
            self._breaker.record_failure()
            raise TokenPoolUnavailable(f"{error.detail} (after {attempts[0]} attempt(s))", code=error.code,
                                       status=error.status, correlation_id=error.correlation_id,
                                       retry_after=error.retry_after) from None
        except TokenPoolError as error:
            # TokenPool answered: it is up, whatever it thought of the request.
            self._breaker.record_success()
            if not_found_ok and isinstance(error, NotFound):
                return None
            raise
        except BaseException:
            self._breaker.release()
            raise
        self._breaker.record_success()
        try:
            return response.json()
        except ValueError:
            raise TokenPoolError("response body is not JSON", code="malformed_response",
                                 status=response.status_code,
                                 correlation_id=response.headers.get("X-Correlation-ID")) from None

    def _attempt(self, method: str, path: str, *, json: Any, headers: dict[str, str],
                 attempts: list[int]) -> httpx.Response:
        attempts[0] += 1
        try:
            response = self._http.request(method, path, json=json, headers=headers)
        except RETRYABLE_TRANSPORT_ERRORS as exc:
            code = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection_error"
            logger.info("tokenpool_attempt_failed", extra={
                "path": _path_label(path), "attempt": attempts[0], "error": type(exc).__name__,
                "correlation_id": headers["X-Correlation-ID"]})
            raise _Retryable(TokenPoolUnavailable(f"no answer from TokenPool ({type(exc).__name__})", code=code,
                                                  correlation_id=headers["X-Correlation-ID"])) from None
        except httpx.HTTPError as exc:
            # Misconfiguration (bad URL, unsupported scheme...): repeating cannot help.
            raise TokenPoolError(f"request could not be sent ({type(exc).__name__})", code="client_error",
                                 correlation_id=headers["X-Correlation-ID"]) from None
        status = response.status_code
        if 200 <= status < 300:
            return response
        error = _error_from(response, fallback_correlation_id=headers["X-Correlation-ID"])
        if status == 429 or status >= 500:
            logger.info("tokenpool_attempt_failed", extra={
                "path": _path_label(path), "attempt": attempts[0], "status_code": status, "error": error.code,
                "correlation_id": error.correlation_id})
            raise _Retryable(error)
        raise error

    def _wait(self, retry_state: Any) -> float:
        # Honour the server's pacing, capped so one call cannot park its thread for minutes.
        return retry_wait(self._backoff, retry_state, backoff_max=self.backoff_max,
                         retry_after_max=self.retry_after_max)

    @staticmethod
    def _log_breaker_change(old: str, new: str) -> None:
        log = logger.warning if new != "closed" else logger.info
        log("tokenpool_circuit_state", extra={"previous_state": old, "state": new})


def _error_from(response: httpx.Response, *, fallback_correlation_id: str) -> TokenPoolError:
    """The contract's error body as a typed exception, tolerant of proxies answering HTML."""
    correlation_id = response.headers.get("X-Correlation-ID") or fallback_correlation_id
    status = response.status_code
    try:
        body = response.json()
        code = str(body["code"])[:64]
        detail = str(body.get("detail", ""))[:300]
        errors = body.get("errors") if isinstance(body.get("errors"), dict) else None
        correlation_id = str(body.get("correlation_id") or correlation_id)
    except (ValueError, KeyError, TypeError):
        code, detail, errors = "http_error", response.reason_phrase or "unexpected response", None
    error_cls = TokenPoolUnavailable if status >= 500 else _ERRORS_BY_CODE.get(code, TokenPoolError)
    return error_cls(detail, code=code, status=status, correlation_id=correlation_id, errors=errors,
                     retry_after=retry_after_seconds(response))


def _path_label(path: str) -> str:
    # Reservation ids are not secrets, but a bounded label keeps log cardinality low.
    parts = path.split("/")
    if parts[0] == "reservations" and len(parts) > 1 and parts[1] != "batch":
        return "/".join(["reservations", "{id}", *parts[2:]])
    return path


def _api_root(base_url: str) -> str:
    """``https://host[/prefix]`` → ``https://host[/prefix]/api/v1/``; a base URL that already ends in
    ``/api/v1`` is taken as is (otherwise every call would 404, and lookups would quietly say None)."""
    root = base_url.rstrip("/")
    return (root if root.endswith("/api/v1") else root + "/api/v1") + "/"


def _split(count: int, size: int) -> list[int]:
    return [min(size, count - start) for start in range(0, count, size)]


def _derived_key(key: str, index: int) -> str:
    """A per-chunk key, stable across calls with the same ``key`` and within 255 characters."""
    base = key if len(key) <= _MAX_IDEMPOTENCY_KEY - 8 else hashlib.sha256(key.encode()).hexdigest()
    return f"{base}.{index}"
