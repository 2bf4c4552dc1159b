"""The TokenizationLibrary: a typed client of TOME's HTTP API (docs/tome-api.md) on httpx.

Usable without the service and without Django (it ships alone as the ``tokenpool-tome-client``
wheel), so nothing here may import Django; the Django glue lives in ``core/tome/provider.py``.

Two TOME namespaces back every pair: NS1 maps a value to its internal token, NS2 maps the
internal token (used as NS2's value) to the external reference id handed to callers.

Reliability rules, all in ``HttpTokenizationLibrary._call``:
- one long-lived ``httpx.Client`` (pooled keep-alive connections, explicit timeouts);
- tenacity retries with exponential backoff and jitter on timeouts, connection errors, 429 and
  5xx only; 429/503 ``Retry-After`` is honoured up to ``backoff_max``; other 4xx never retried;
- a circuit breaker over logical calls so an outage fails fast instead of stacking timeouts;
- one ``CallRecord``, one counter increment and one log line per HTTP attempt (the metrics
  contract counts retries separately); never a value, a token or the bearer token in them.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, TypeVar, runtime_checkable
from urllib.parse import quote

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random

from tokenpool_tome.breaker import CircuitBreaker
from tokenpool_tome.correlation import get_correlation_id, new_correlation_id
from tokenpool_tome.errors import (
    CircuitOpenError,
    NamespaceNotFound,
    TomeError,
    TomeRequestError,
    TomeResponseError,
    TomeUnavailable,
)
from tokenpool_tome.retry_policy import RETRYABLE_TRANSPORT_ERRORS, retry_after_seconds, retry_wait

__all__ = [
    "CallRecord",
    "CircuitOpenError",
    "HttpTokenizationLibrary",
    "NamespaceNotFound",
    "TokenPair",
    "TokenizationLibrary",
    "TomeClientConfig",
    "TomeError",
    "TomeRequestError",
    "TomeResponseError",
    "TomeUnavailable",
]

__version__ = "0.2.0"

logger = logging.getLogger("tokenpool.tome")

T = TypeVar("T")

OK = "ok"
ERROR = "error"


@dataclass(frozen=True, slots=True)
class TokenPair:
    """A pair of tokens: ``internal_token`` (NS1) and ``external_ref_id`` (NS2).

    ``status`` and ``source`` are filled only by TokenPoolClient lookups (the server's pair body,
    or ``source="client_direct"`` for its TOME fallback). They take no part in equality or hashing:
    a pair is its two tokens, wherever it was read from.
    """

    internal_token: str
    external_ref_id: str
    status: str | None = field(default=None, compare=False)
    source: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One HTTP attempt against TOME, as reported to ``on_call`` (never carries values/tokens)."""

    namespace: str
    operation: str  # generate | tokenize | detokenize | lookup
    batch_size: int
    attempt: int  # 1 for the first try, 2.. for retries of the same logical call
    latency_seconds: float
    outcome: str  # ok | error
    status_code: int | None  # None when no response arrived (timeout, connection error)
    error: str | None  # e.g. "ReadTimeout", "503 unavailable"; None on success
    correlation_id: str | None = None


@dataclass(frozen=True)
class TomeClientConfig:
    base_url: str
    api_token: str
    ns1: str = "ns1"
    ns2: str = "ns2"
    connect_timeout: float = 1.0
    read_timeout: float = 2.0
    pool_timeout: float = 1.0
    max_attempts: int = 3
    backoff_initial: float = 0.05
    backoff_max: float = 1.0
    breaker_failure_threshold: int = 5
    breaker_reset_seconds: float = 15.0
    max_batch: int = 5000

    def __post_init__(self) -> None:
        if not self.base_url:
            raise ValueError("base_url is required")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if min(self.connect_timeout, self.read_timeout, self.pool_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        if self.backoff_initial < 0 or self.backoff_max < 0:
            raise ValueError("backoff must not be negative")

    def __repr__(self) -> str:
        # The bearer token must never reach a log line or a traceback through a repr.
        return (f"TomeClientConfig(base_url={self.base_url!r}, api_token='<redacted>', "
                f"ns1={self.ns1!r}, ns2={self.ns2!r}, max_attempts={self.max_attempts}, "
                f"max_batch={self.max_batch})")


@runtime_checkable
class TokenizationLibrary(Protocol):
    """What the service (and any consuming team) codes against; see HttpTokenizationLibrary."""

    def tokenize(self, value: str) -> TokenPair: ...
    def tokenize_batch(self, values: Sequence[str]) -> list[TokenPair]: ...
    def detokenize(self, external_ref_id: str) -> str | None: ...
    def detokenize_batch(self, external_ref_ids: Sequence[str]) -> list[str | None]: ...
    def lookup(self, value: str) -> TokenPair | None: ...
    def lookup_batch(self, values: Sequence[str]) -> list[TokenPair | None]: ...
    def detokenize_internal(self, internal_token: str) -> str | None: ...
    def external_for(self, internal_token: str) -> str | None: ...
    def external_for_batch(self, internal_tokens: Sequence[str]) -> list[str | None]: ...
    def internal_for(self, external_ref_id: str) -> str | None: ...
    def internal_for_batch(self, external_ref_ids: Sequence[str]) -> list[str | None]: ...
    def generate_pairs(self, count: int, *, batch_size: int | None = None) -> list[TokenPair]: ...
    def ping(self) -> bool: ...
    def close(self) -> None: ...


class _RetryableFailure(Exception):
    """An attempt that may succeed if repeated (timeout, connection error, 429, 5xx)."""

    def __init__(self, description: str, *, status_code: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.status_code = status_code
        self.retry_after = retry_after


class HttpTokenizationLibrary(TokenizationLibrary):
    """TokenizationLibrary over TOME's HTTP API. Thread-safe; share one instance per process."""

    def __init__(self, config: TomeClientConfig, *, transport: httpx.BaseTransport | None = None,
                 correlation_id_provider: Callable[[], str | None] = get_correlation_id,
                 on_call: Callable[[CallRecord], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._correlation_id_provider = correlation_id_provider
        self._on_call = on_call
        self._sleep = sleep
        self._counts: dict[tuple[str, str, str], int] = {}
        self._counts_lock = threading.Lock()
        self._breaker = CircuitBreaker(failure_threshold=config.breaker_failure_threshold,
                                       reset_seconds=config.breaker_reset_seconds, clock=clock,
                                       on_change=self._log_breaker_change)
        self._http = httpx.Client(
            base_url=config.base_url,
            transport=transport,
            timeout=httpx.Timeout(connect=config.connect_timeout, read=config.read_timeout,
                                  write=config.read_timeout, pool=config.pool_timeout),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20,
                                keepalive_expiry=30.0),
            headers={"Authorization": f"Bearer {config.api_token}",
                     "Accept": "application/json",
                     "User-Agent": f"tokenpool-tome-client/{__version__}"},
            follow_redirects=False,
        )
        # /readyz must answer quickly even when TOME hangs.
        self._ping_timeout = httpx.Timeout(min(config.read_timeout, 1.0),
                                           connect=min(config.connect_timeout, 1.0),
                                           pool=min(config.pool_timeout, 1.0))
        # Exponential backoff plus up to one initial step of jitter, capped in _wait (spelled with
        # long-standing tenacity waits so the wheel works across tenacity 8 and 9).
        self._backoff = (wait_exponential(multiplier=config.backoff_initial, max=config.backoff_max)
                         + wait_random(0, config.backoff_initial))

    # ---- dual-namespace operations -----------------------------------------------------------

    def tokenize(self, value: str) -> TokenPair:
        return self.tokenize_batch([value])[0]

    def tokenize_batch(self, values: Sequence[str]) -> list[TokenPair]:
        pairs: list[TokenPair] = []
        for chunk in self._chunks(values):
            internals = self._tokenize(self.config.ns1, chunk)
            externals = self._tokenize(self.config.ns2, internals)
            pairs.extend(TokenPair(i, e) for i, e in zip(internals, externals))
        return pairs

    def detokenize(self, external_ref_id: str) -> str | None:
        return self.detokenize_batch([external_ref_id])[0]

    def detokenize_batch(self, external_ref_ids: Sequence[str]) -> list[str | None]:
        results: list[str | None] = []
        for chunk in self._chunks(external_ref_ids):
            internals = self._detokenize(self.config.ns2, chunk)
            results.extend(self._map_known(internals, lambda known: self._detokenize(self.config.ns1, known)))
        return results

    def lookup(self, value: str) -> TokenPair | None:
        return self.lookup_batch([value])[0]

    def lookup_batch(self, values: Sequence[str]) -> list[TokenPair | None]:
        results: list[TokenPair | None] = []
        for chunk in self._chunks(values):
            internals = self._lookup(self.config.ns1, chunk)
            externals = self._map_known(internals, lambda known: self._lookup(self.config.ns2, known))
            # An internal token without its external half is not a pair yet: lookup creates nothing.
            results.extend(TokenPair(i, e) if i is not None and e is not None else None
                           for i, e in zip(internals, externals))
        return results

    # ---- one-hop operations on internal tokens -----------------------------------------------

    def detokenize_internal(self, internal_token: str) -> str | None:
        return self._detokenize(self.config.ns1, [internal_token])[0]

    def external_for(self, internal_token: str) -> str | None:
        return self.external_for_batch([internal_token])[0]

    def external_for_batch(self, internal_tokens: Sequence[str]) -> list[str | None]:
        return self._batched(self._chunks(internal_tokens),
                             lambda chunk: self._lookup(self.config.ns2, chunk))

    def internal_for(self, external_ref_id: str) -> str | None:
        return self.internal_for_batch([external_ref_id])[0]

    def internal_for_batch(self, external_ref_ids: Sequence[str]) -> list[str | None]:
        return self._batched(self._chunks(external_ref_ids),
                             lambda chunk: self._detokenize(self.config.ns2, chunk))

    # ---- pool refill ---------------------------------------------------------------------------

    def generate_pairs(self, count: int, *, batch_size: int | None = None) -> list[TokenPair]:
        """``count`` fresh pairs: NS1 generate + NS2 tokenize, ``batch_size`` (≤ max_batch) at a time.

        A failure part-way raises; pairs of the chunks already done are dropped (they are unused
        surrogates in TOME, harmless). Callers wanting to keep partial progress call in chunks.
        """
        if count < 0:
            raise ValueError("count must not be negative")
        size = min(batch_size or self.config.max_batch, self.config.max_batch)
        if size < 1:
            raise ValueError("batch_size must be at least 1")
        pairs: list[TokenPair] = []
        remaining = count
        while remaining > 0:
            n = min(size, remaining)
            internals = self._generate(self.config.ns1, n)
            externals = self._tokenize(self.config.ns2, internals)
            pairs.extend(TokenPair(i, e) for i, e in zip(internals, externals))
            remaining -= n
        return pairs

    # ---- operations support ----------------------------------------------------------------------

    def ping(self) -> bool:
        """Whether TOME answers ``GET /healthz`` with 200; not an operation, so not counted."""
        try:
            response = self._http.get("/healthz", timeout=self._ping_timeout,
                                      headers={"X-Correlation-ID": self._correlation_id()})
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    @property
    def call_counts(self) -> dict[tuple[str, str, str], int]:
        """(namespace, operation, outcome) -> HTTP calls made by this instance (a snapshot)."""
        with self._counts_lock:
            return dict(self._counts)

    @property
    def breaker_state(self) -> str:
        return self._breaker.state

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- per-namespace operations ----------------------------------------------------------------

    def _generate(self, namespace: str, count: int) -> list[str]:
        # One key per logical call, reused by its retries: TOME then returns the same tokens
        # instead of minting a second set when only the response was lost.
        tokens = self._call(namespace, "generate", {"count": count}, batch_size=count,
                            result_key="tokens", expected=count, nullable=False,
                            idempotency_key=uuid.uuid4().hex)
        return tokens  # type: ignore[return-value]

    def _tokenize(self, namespace: str, values: Sequence[str]) -> list[str]:
        return self._call(namespace, "tokenize", {"values": list(values)}, batch_size=len(values),
                          result_key="tokens", expected=len(values), nullable=False)  # type: ignore[return-value]

    def _detokenize(self, namespace: str, tokens: Sequence[str]) -> list[str | None]:
        return self._call(namespace, "detokenize", {"tokens": list(tokens)}, batch_size=len(tokens),
                          result_key="values", expected=len(tokens), nullable=True)

    def _lookup(self, namespace: str, values: Sequence[str]) -> list[str | None]:
        return self._call(namespace, "lookup", {"values": list(values)}, batch_size=len(values),
                          result_key="tokens", expected=len(values), nullable=True)

    # ---- the one place that talks HTTP -----------------------------------------------------------

    def _call(self, namespace: str, operation: str, payload: dict[str, Any], *, batch_size: int,
              result_key: str, expected: int, nullable: bool,
              idempotency_key: str | None = None) -> list[str | None]:
        """One logical call: breaker check, attempts with retries, result validation."""
        self._breaker.before_call()
        headers = {"X-Correlation-ID": self._correlation_id()}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        url = f"/v1/namespaces/{quote(namespace, safe='')}/{operation}"
        attempts = [0]  # attempts made so far, shared with _attempt
        retrying = Retrying(
            stop=stop_after_attempt(self.config.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_RetryableFailure),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            response = retrying(self._attempt, namespace=namespace, operation=operation, url=url,
                                payload=payload, headers=headers, batch_size=batch_size,
                                attempts=attempts)
        except _RetryableFailure as exc:
            self._breaker.record_failure()
            raise TomeUnavailable(
                f"TOME {namespace} {operation} unavailable after {attempts[0]} attempt(s): "
                f"{exc.description}",
                retry_after=exc.retry_after, status_code=exc.status_code, attempts=attempts[0],
            ) from None
        except TomeRequestError:
            # TOME answered: it is up, whatever it thought of the request.
            self._breaker.record_success()
            raise
        except BaseException:
            self._breaker.release()
            raise
        self._breaker.record_success()
        return self._parse(response, namespace=namespace, operation=operation,
                           result_key=result_key, expected=expected, nullable=nullable)

    def _attempt(self, *, namespace: str, operation: str, url: str, payload: dict[str, Any],
                 headers: dict[str, str], batch_size: int, attempts: list[int]) -> httpx.Response:
        attempts[0] += 1
        attempt = attempts[0]
        started = time.perf_counter()
        record = {"namespace": namespace, "operation": operation, "batch_size": batch_size,
                  "attempt": attempt, "correlation_id": headers["X-Correlation-ID"]}
        try:
            response = self._http.post(url, json=payload, headers=headers)
        except RETRYABLE_TRANSPORT_ERRORS as exc:
            self._record(**record, started=started, outcome=ERROR, status_code=None,
                         error=type(exc).__name__)
            raise _RetryableFailure(type(exc).__name__) from None
        except httpx.HTTPError as exc:
            # Misconfiguration (bad URL, unsupported scheme...): repeating cannot help.
            self._record(**record, started=started, outcome=ERROR, status_code=None,
                         error=type(exc).__name__)
            raise TomeError(f"TOME {namespace} {operation} failed: {type(exc).__name__}") from None
        status = response.status_code
        if 200 <= status < 300:
            self._record(**record, started=started, outcome=OK, status_code=status, error=None)
            return response
        code, message = _error_body(response)
        self._record(**record, started=started, outcome=ERROR, status_code=status,
                     error=f"{status} {code}")
        if status == 429 or status >= 500:
            raise _RetryableFailure(f"{status} {code}", status_code=status,
                                    retry_after=retry_after_seconds(response))
        error_cls = NamespaceNotFound if status == 404 and code == "namespace_not_found" else TomeRequestError
        raise error_cls(message, status=status, code=code)

    def _wait(self, retry_state: Any) -> float:
        # Honour the server's pacing, but never park a request thread longer than backoff_max.
        return retry_wait(self._backoff, retry_state, backoff_max=self.config.backoff_max,
                         retry_after_max=self.config.backoff_max)

    def _parse(self, response: httpx.Response, *, namespace: str, operation: str, result_key: str,
               expected: int, nullable: bool) -> list[str | None]:
        try:
            items = response.json()[result_key]
        except (ValueError, KeyError, TypeError):
            raise TomeResponseError(f"TOME {namespace} {operation}: malformed response body") from None
        allowed = (str, type(None)) if nullable else (str,)
        if not isinstance(items, list) or len(items) != expected or not all(isinstance(i, allowed) for i in items):
            raise TomeResponseError(
                f"TOME {namespace} {operation}: expected {expected} {result_key} in the response")
        return items

    def _record(self, *, namespace: str, operation: str, batch_size: int, attempt: int,
                correlation_id: str, started: float, outcome: str, status_code: int | None,
                error: str | None) -> None:
        latency = time.perf_counter() - started
        with self._counts_lock:
            key = (namespace, operation, outcome)
            self._counts[key] = self._counts.get(key, 0) + 1
        logger.info("tome_call", extra={
            "namespace": namespace, "operation": operation, "batch_size": batch_size,
            "attempt": attempt, "latency_ms": round(latency * 1000, 2), "outcome": outcome,
            "status_code": status_code, "error": error, "correlation_id": correlation_id,
        })
        if self._on_call is not None:
            call = CallRecord(namespace=namespace, operation=operation, batch_size=batch_size,
                              attempt=attempt, latency_seconds=latency, outcome=outcome,
                              status_code=status_code, error=error, correlation_id=correlation_id)
            try:
                self._on_call(call)
            except Exception:  # a broken metrics hook must not fail a tokenization
                logger.warning("tome_on_call_hook_failed", exc_info=True)

    # ---- helpers ---------------------------------------------------------------------------------

    def _correlation_id(self) -> str:
        return self._correlation_id_provider() or new_correlation_id()

    def _chunks(self, items: Sequence[str]) -> Iterator[Sequence[str]]:
        if isinstance(items, (str, bytes)):
            raise TypeError("expected a sequence of strings, got a single string")
        size = self.config.max_batch
        for start in range(0, len(items), size):
            yield items[start:start + size]

    @staticmethod
    def _batched(chunks: Iterator[Sequence[str]], call: Callable[[Sequence[str]], list[T]]) -> list[T]:
        results: list[T] = []
        for chunk in chunks:
            results.extend(call(chunk))
        return results

    @staticmethod
    def _map_known(items: list[str | None], call: Callable[[list[str]], list[str | None]]) -> list[str | None]:
        """Apply a batch call to the non-None items only, keeping positions (None stays None)."""
        known = [item for item in items if item is not None]
        if not known:
            return [None] * len(items)
        answers = iter(call(known))
        return [next(answers) if item is not None else None for item in items]

    @staticmethod
    def _log_breaker_change(old: str, new: str) -> None:
        log = logger.warning if new != "closed" else logger.info
        log("tome_circuit_state", extra={"previous_state": old, "state": new})


def _error_body(response: httpx.Response) -> tuple[str, str]:
    """(code, message) from TOME's error body, tolerant of proxies answering HTML."""
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error.get("message", ""))
    except (ValueError, KeyError, TypeError):
        return "http_error", response.reason_phrase or "unexpected response"
    # Keep messages short: they go into exception strings and from there into logs.
    return code[:64], message[:200]
