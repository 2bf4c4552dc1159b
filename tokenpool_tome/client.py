"""The TokenizationLibrary: a typed client of TOME's HTTP API (docs/tome-api.md) on httpx.

Usable without the service and without Django (it ships alone as the ``tokenpool-tome-client``
wheel), so nothing here may import Django; the Django glue lives in ``tome/provider.py``.

Two TOME namespaces back every pair: NS1 maps a value to its internal token, NS2 maps the
internal token (used as NS2's value) to the external reference id handed to callers.

Reliability rules: those of ``http_layer`` (pooled connections, retries on timeouts, connection
errors, 429 and 5xx with ``Retry-After`` honoured up to ``backoff_max``, a circuit breaker, one
correlation id per call), plus, here, one ``CallRecord``, one counter increment and one log line per
HTTP attempt (the metrics contract counts retries separately); never a value, a token or the bearer
token in them.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from tokenpool_tome.breaker import CircuitBreaker, log_state_changes
from tokenpool_tome.correlation import get_correlation_id
from tokenpool_tome.errors import (
    CircuitOpenError,
    NamespaceNotFound,
    TomeError,
    TomeRequestError,
    TomeResponseError,
    TomeUnavailable,
)
from tokenpool_tome.http_layer import Attempt, HttpClientLifecycle, HttpLayer, Refused, RetriesExhausted, Unsendable
from tokenpool_tome.retry_policy import RetryPolicy
from tokenpool_tome.tome_types import CallRecord, TokenizationLibrary, TokenPair, TomeClientConfig
from tokenpool_tome.version import __version__

# Its public surface as before the split into modules (the package re-exports it).
__all__ = [
    "HttpTokenizationLibrary", "TokenizationLibrary", "TomeClientConfig", "TokenPair", "CallRecord", "__version__",
    "TomeError", "TomeUnavailable", "CircuitOpenError", "TomeRequestError", "NamespaceNotFound", "TomeResponseError",
]

logger = logging.getLogger("tokenpool.tome")

T = TypeVar("T")

OK = "ok"
ERROR = "error"


class HttpTokenizationLibrary(HttpClientLifecycle, TokenizationLibrary):
    """TokenizationLibrary over TOME's HTTP API. Thread-safe; share one instance per process."""

    def __init__(self, config: TomeClientConfig, *, transport: httpx.BaseTransport | None = None,
                 correlation_id_provider: Callable[[], str | None] = get_correlation_id,
                 on_call: Callable[[CallRecord], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._on_call = on_call
        self._counts: dict[tuple[str, str, str], int] = {}
        self._counts_lock = threading.Lock()
        self._http = HttpLayer(
            base_url=config.base_url, authorization=f"Bearer {config.api_token}",
            timeout=httpx.Timeout(connect=config.connect_timeout, read=config.read_timeout,
                                  write=config.read_timeout, pool=config.pool_timeout),
            # Honour TOME's pacing, but never park a request thread longer than backoff_max.
            retry=RetryPolicy(config.max_attempts, config.backoff_initial, config.backoff_max,
                              retry_after_max=config.backoff_max),
            breaker=CircuitBreaker(failure_threshold=config.breaker_failure_threshold,
                                   reset_seconds=config.breaker_reset_seconds, clock=clock,
                                   on_change=log_state_changes(logger, "tome_circuit_state")),
            read_error_body=_read_tome_error, transport=transport,
            correlation_id_provider=correlation_id_provider, sleep=sleep)
        # /readyz must answer quickly even when TOME hangs.
        self._ping_timeout = httpx.Timeout(min(config.read_timeout, 1.0),
                                           connect=min(config.connect_timeout, 1.0),
                                           pool=min(config.pool_timeout, 1.0))

    # ---- dual-namespace operations -----------------------------------------------------------

    def tokenize(self, value: str) -> TokenPair:
        return self.tokenize_batch([value])[0]

    def tokenize_batch(self, values: Sequence[str]) -> list[TokenPair]:
        return self._per_chunk(values, self._tokenize_chunk)

    def detokenize(self, external_ref_id: str) -> str | None:
        return self.detokenize_batch([external_ref_id])[0]

    def detokenize_batch(self, external_ref_ids: Sequence[str]) -> list[str | None]:
        return self._per_chunk(external_ref_ids, self._detokenize_chunk)

    def lookup(self, value: str) -> TokenPair | None:
        """The value's existing pair, or None: a lookup creates nothing in either namespace."""
        return self.lookup_batch([value])[0]

    def lookup_batch(self, values: Sequence[str]) -> list[TokenPair | None]:
        return self._per_chunk(values, self._lookup_chunk)

    # ---- one-hop operations on internal tokens -----------------------------------------------

    def detokenize_internal(self, internal_token: str) -> str | None:
        return self._detokenize(self.config.ns1, [internal_token])[0]

    def external_for(self, internal_token: str) -> str | None:
        return self.external_for_batch([internal_token])[0]

    def external_for_batch(self, internal_tokens: Sequence[str]) -> list[str | None]:
        """NS2 lookup only: what TokenPoolClient's fallback needs to resolve an internal token."""
        return self._per_chunk(internal_tokens, partial(self._lookup, self.config.ns2))

    def internal_for(self, external_ref_id: str) -> str | None:
        return self.internal_for_batch([external_ref_id])[0]

    def internal_for_batch(self, external_ref_ids: Sequence[str]) -> list[str | None]:
        """NS2 detokenize only: the internal token behind an external ref, without the NS1 hop."""
        return self._per_chunk(external_ref_ids, partial(self._detokenize, self.config.ns2))

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
        for start in range(0, count, size):
            internals = self._generate(self.config.ns1, min(size, count - start))
            pairs.extend(_paired(internals, self._tokenize(self.config.ns2, internals)))
        return pairs

    # ---- operations support ----------------------------------------------------------------------

    def ping(self) -> bool:
        """Whether TOME answers ``GET /healthz`` with 200; not an operation, so not counted."""
        return self._http.probe("/healthz", timeout=self._ping_timeout)

    @property
    def call_counts(self) -> dict[tuple[str, str, str], int]:
        """(namespace, operation, outcome) -> HTTP calls made by this instance (a snapshot)."""
        with self._counts_lock:
            return dict(self._counts)

    # ---- one chunk of a dual-namespace operation ---------------------------------------------------

    def _tokenize_chunk(self, values: Sequence[str]) -> list[TokenPair]:
        internals = self._tokenize(self.config.ns1, values)
        return _paired(internals, self._tokenize(self.config.ns2, internals))

    def _detokenize_chunk(self, external_ref_ids: Sequence[str]) -> list[str | None]:
        internals = self._detokenize(self.config.ns2, external_ref_ids)
        return _map_known(internals, partial(self._detokenize, self.config.ns1))

    def _lookup_chunk(self, values: Sequence[str]) -> list[TokenPair | None]:
        internals = self._lookup(self.config.ns1, values)
        externals = _map_known(internals, partial(self._lookup, self.config.ns2))
        # An internal token without its external half is not a pair yet: lookup creates nothing.
        return [TokenPair(i, e) if i is not None and e is not None else None
                for i, e in zip(internals, externals, strict=True)]

    # ---- per-namespace operations ----------------------------------------------------------------

    def _generate(self, namespace: str, count: int) -> list[str]:
        # One key per logical call, reused by its retries: TOME then returns the same tokens
        # instead of minting a second set when only the response was lost.
        return self._call(namespace, "generate", {"count": count}, batch_size=count, result_key="tokens",
                          nullable=False, idempotency_key=uuid.uuid4().hex)

    def _tokenize(self, namespace: str, values: Sequence[str]) -> list[str]:
        return self._call(namespace, "tokenize", {"values": list(values)}, batch_size=len(values),
                          result_key="tokens", nullable=False)

    def _detokenize(self, namespace: str, tokens: Sequence[str]) -> list[str | None]:
        return self._call(namespace, "detokenize", {"tokens": list(tokens)}, batch_size=len(tokens),
                          result_key="values", nullable=True)

    def _lookup(self, namespace: str, values: Sequence[str]) -> list[str | None]:
        return self._call(namespace, "lookup", {"values": list(values)}, batch_size=len(values),
                          result_key="tokens", nullable=True)

    # ---- the one place that talks HTTP -----------------------------------------------------------

    def _call(self, namespace: str, operation: str, payload: dict[str, Any], *, batch_size: int,
              result_key: str, nullable: bool, idempotency_key: str | None = None) -> list[Any]:
        """One logical call through the shared HTTP layer, its failures told as TOME errors.

        Returns the ``result_key`` list, checked to hold ``batch_size`` strings (or None when
        ``nullable``). An open circuit raises the breaker's ``CircuitOpenError`` as it is.
        """
        label = f"TOME {namespace} {operation}"
        url = f"/v1/namespaces/{quote(namespace, safe='')}/{operation}"
        try:
            response = self._http.send("POST", url, json=payload, headers=self._http.headers(idempotency_key),
                                       observe=partial(self._record, namespace, operation, batch_size))
        except RetriesExhausted as exhausted:
            last = exhausted.attempt
            raise TomeUnavailable(f"{label} unavailable after {last.number} attempt(s): {last.error}",
                                  retry_after=last.answer.retry_after if last.answer else None,
                                  status_code=last.status_code, attempts=last.number) from None
        except Refused as refused:
            answer = refused.answer
            not_found = answer.status == 404 and answer.code == "namespace_not_found"
            error_cls = NamespaceNotFound if not_found else TomeRequestError
            raise error_cls(answer.message, status=answer.status, code=answer.code) from None
        except Unsendable as unsendable:
            # Misconfiguration (bad URL, unsupported scheme...): repeating cannot help.
            raise TomeError(f"{label} failed: {unsendable.attempt.error}") from None
        return _checked_items(response, label=label, result_key=result_key, expected=batch_size,
                              nullable=nullable)

    def _record(self, namespace: str, operation: str, batch_size: int, attempt: Attempt) -> None:
        outcome = OK if attempt.ok else ERROR
        with self._counts_lock:
            key = (namespace, operation, outcome)
            self._counts[key] = self._counts.get(key, 0) + 1
        call = CallRecord(namespace=namespace, operation=operation, batch_size=batch_size,
                          attempt=attempt.number, latency_seconds=attempt.latency_seconds, outcome=outcome,
                          status_code=attempt.status_code, error=attempt.error,
                          correlation_id=attempt.correlation_id)
        logger.info("tome_call", extra={
            "namespace": namespace, "operation": operation, "batch_size": batch_size,
            "attempt": call.attempt, "latency_ms": round(call.latency_seconds * 1000, 2), "outcome": outcome,
            "status_code": call.status_code, "error": call.error, "correlation_id": call.correlation_id,
        })
        if self._on_call is not None:
            try:
                self._on_call(call)
            except Exception:  # a broken metrics hook must not fail a tokenization
                logger.warning("tome_on_call_hook_failed", exc_info=True)

    def _per_chunk(self, items: Sequence[str], call: Callable[[Sequence[str]], list[T]]) -> list[T]:
        """``call`` on each ``max_batch`` slice of ``items``, the answers joined in order."""
        if isinstance(items, (str, bytes)):
            raise TypeError("expected a sequence of strings, got a single string")
        size = self.config.max_batch
        results: list[T] = []
        for start in range(0, len(items), size):
            results.extend(call(items[start:start + size]))
        return results


def _read_tome_error(body: Any) -> tuple[str, str, dict[str, Any] | None, str | None]:
    """(code, message) of TOME's ``{"error": {"code", "message"}}``; TOME names no fields or ids."""
    error = body["error"]
    # Keep messages short: they go into exception strings and from there into logs.
    return str(error["code"])[:64], str(error.get("message", ""))[:200], None, None


def _checked_items(response: httpx.Response, *, label: str, result_key: str, expected: int,
                   nullable: bool) -> list[Any]:
    try:
        items = response.json()[result_key]
    except (ValueError, KeyError, TypeError):
        raise TomeResponseError(f"{label}: malformed response body") from None
    allowed = (str, type(None)) if nullable else (str,)
    if not isinstance(items, list) or len(items) != expected or not all(isinstance(i, allowed) for i in items):
        raise TomeResponseError(f"{label}: expected {expected} {result_key} in the response")
    return items


def _paired(internals: list[str], externals: list[str]) -> list[TokenPair]:
    return [TokenPair(i, e) for i, e in zip(internals, externals, strict=True)]


def _map_known(items: list[str | None], call: Callable[[list[str]], list[str | None]]) -> list[str | None]:
    """Apply a batch call to the non-None items only, keeping positions (None stays None)."""
    known = [item for item in items if item is not None]
    if not known:
        return [None] * len(items)
    answers = iter(call(known))
    return [next(answers) if item is not None else None for item in items]
