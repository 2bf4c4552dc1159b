"""The HTTP machinery both clients share, so that TOME calls and TokenPool calls retry, trip and
identify themselves alike.

``HttpLayer`` sends one logical call as one or more attempts over a long-lived ``httpx.Client``
(pooled keep-alive connections, explicit timeouts):
- tenacity retries on timeouts, connection errors, 429 and 5xx only (``RetryPolicy``: backoff with
  jitter, ``Retry-After`` honoured up to a cap); other answers are never retried;
- a circuit breaker over logical calls, so an outage costs one timeout per period, not one per call;
- the same ``X-Correlation-ID`` (and ``Idempotency-Key``, when given) on every attempt of a call;
- error bodies read into an ``ErrorAnswer`` whatever was sent (the API's JSON or a proxy's HTML).

What an outcome means to a caller (its exception classes, messages, logs and metrics) stays with
each client: the layer reports every attempt as an ``Attempt`` and ends a failed call with one of
``RetriesExhausted``, ``Refused``, ``Unsendable`` or the breaker's ``CircuitOpenError``.
An internal module of the package: not part of the client API of contract section 5.
"""
from __future__ import annotations

import itertools
import os
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Self

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from tokenpool_tome.breaker import CircuitBreaker
from tokenpool_tome.correlation import new_correlation_id
from tokenpool_tome.retry_policy import RETRYABLE_TRANSPORT_ERRORS, RetryPolicy, retry_after_seconds
from tokenpool_tome.version import __version__

__all__ = [
    "CORRELATION_HEADER",
    "Attempt",
    "ErrorAnswer",
    "ErrorBodyReader",
    "HttpClientLifecycle",
    "HttpLayer",
    "Refused",
    "RetriesExhausted",
    "RetryableFailure",
    "Unsendable",
    "read_error_answer",
]

CORRELATION_HEADER = "X-Correlation-ID"

# One API's error body -> (code, message, per-field errors, correlation id); raises ValueError,
# KeyError or TypeError when the body is not that API's error shape.
ErrorBodyReader = Callable[[Any], tuple[str, str, dict[str, Any] | None, str | None]]


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """A non-2xx answer, read: the API's ``code`` and sentence, or ``http_error`` and the reason
    phrase for a body that is not the API's. ``correlation_id`` is the server's when it named one."""

    status: int
    code: str
    message: str
    correlation_id: str
    errors: dict[str, Any] | None = None
    retry_after: float | None = None

    @property
    def retryable(self) -> bool:
        return self.status == 429 or self.status >= 500


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one HTTP attempt saw, for the clients' logs and metrics (never a body, a token or a key)."""

    number: int  # 1 for the first try of a call, 2.. for its retries
    latency_seconds: float
    correlation_id: str  # the id sent
    status_code: int | None = None  # None when no answer arrived
    no_answer: type[httpx.HTTPError] | None = None  # what went wrong when no answer arrived
    answer: ErrorAnswer | None = None  # the error body of a non-2xx answer
    retryable: bool = False

    @property
    def ok(self) -> bool:
        return self.no_answer is None and self.answer is None

    @property
    def error(self) -> str | None:
        """A short label of the failure ("ReadTimeout", "503 unavailable"), None on success."""
        if self.no_answer is not None:
            return self.no_answer.__name__
        if self.answer is not None:
            return f"{self.answer.status} {self.answer.code}"
        return None


class RetryableFailure(Exception):
    """An attempt that may succeed if repeated (timeout, connection error, 429, 5xx)."""

    def __init__(self, attempt: Attempt) -> None:
        super().__init__(attempt.error)
        self.attempt = attempt
        # Read by RetryPolicy.pause: the server's pacing, when it sent one.
        self.retry_after = attempt.answer.retry_after if attempt.answer is not None else None


class RetriesExhausted(Exception):
    """Every attempt of the call failed in a retryable way; ``attempt`` is the last one."""

    def __init__(self, attempt: Attempt) -> None:
        super().__init__(attempt.error)
        self.attempt = attempt


class Refused(Exception):
    """The server answered with an error that repeating cannot fix (4xx other than 429)."""

    def __init__(self, attempt: Attempt, answer: ErrorAnswer) -> None:
        super().__init__(attempt.error)
        self.attempt = attempt
        self.answer = answer


class Unsendable(Exception):
    """The request could not be sent or its answer not read (bad URL, unsupported scheme...)."""

    def __init__(self, attempt: Attempt) -> None:
        super().__init__(attempt.error)
        self.attempt = attempt


def read_error_answer(response: httpx.Response, *, sent_correlation_id: str,
                      read_body: ErrorBodyReader) -> ErrorAnswer:
    """The answer's error body, tolerant of proxies answering HTML; the correlation id is the
    body's, else the answer's header, else the one sent."""
    try:
        code, message, errors, body_correlation_id = read_body(response.json())
    except (ValueError, KeyError, TypeError):
        code, message, errors = "http_error", response.reason_phrase or "unexpected response", None
        body_correlation_id = None
    correlation_id = body_correlation_id or response.headers.get(CORRELATION_HEADER) or sent_correlation_id
    return ErrorAnswer(status=response.status_code, code=code, message=message, correlation_id=correlation_id,
                       errors=errors, retry_after=retry_after_seconds(response))


def tls_verification(verify: str | os.PathLike[str] | bool | ssl.SSLContext) -> ssl.SSLContext | bool:
    """httpx's ``verify`` from what a caller passes: a CA bundle's path (e.g. the local CA of
    ``TLS=1 make run``) becomes an SSL context trusting exactly that bundle; True, False or a context
    go through unchanged."""
    if isinstance(verify, (str, os.PathLike)):
        return ssl.create_default_context(cafile=os.fspath(verify))
    return verify


class HttpLayer:
    """One server's connection pool, retry policy and circuit breaker. Thread-safe.

    ``throttling_proves_up``: a 429 that outlasts the retries counts as the server answering
    (TokenPool: it is up and pacing this key) rather than as an outage (TOME: it could not serve).
    ``unsendable_proves_up``: a request that could not be sent (or whose answer could not be
    decoded) resets the breaker like an answer (TokenPool, as its client always counted it) instead
    of leaving it as it was (TOME).
    """

    def __init__(self, *, base_url: str, authorization: str, timeout: httpx.Timeout,
                 retry: RetryPolicy, breaker: CircuitBreaker, read_error_body: ErrorBodyReader,
                 transport: httpx.BaseTransport | None,
                 correlation_id_provider: Callable[[], str | None],
                 sleep: Callable[[float], None],
                 throttling_proves_up: bool = False, unsendable_proves_up: bool = False,
                 verify: str | os.PathLike[str] | bool | ssl.SSLContext = True) -> None:
        self.retry = retry
        self.breaker = breaker
        self._read_error_body = read_error_body
        self._correlation_id_provider = correlation_id_provider
        self._sleep = sleep
        self._throttling_proves_up = throttling_proves_up
        self._unsendable_proves_up = unsendable_proves_up
        self._new_client = partial(
            httpx.Client,
            base_url=base_url,
            transport=transport,
            verify=tls_verification(verify),
            timeout=timeout,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30.0),
            headers={"Authorization": authorization, "Accept": "application/json",
                     "User-Agent": f"tokenpool-tome-client/{__version__}"},
            follow_redirects=False,
        )
        self.client = self._new_client()

    def after_fork_in_child(self) -> None:
        """A forked child gets its own connection pool: the parent's keep-alive sockets are the
        parent's (a shared socket would interleave two processes' requests). The old client is
        dropped, not closed, so nothing is sent on the parent's connections."""
        self.client = self._new_client()
        self.breaker.after_fork_in_child()

    def headers(self, idempotency_key: str | None = None) -> dict[str, str]:
        """The headers of one logical call, sent unchanged on each of its attempts."""
        headers = {CORRELATION_HEADER: self._correlation_id_provider() or new_correlation_id()}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    def send(self, method: str, url: str, *, headers: dict[str, str], json: Any = None,
             observe: Callable[[Attempt], None] | None = None) -> httpx.Response:
        """One logical call: the breaker's admission, attempts with retries, the breaker's verdict.

        Returns the 2xx answer. ``observe`` sees every attempt as it ends.
        """
        self.breaker.before_call()
        retrying = Retrying(stop=stop_after_attempt(self.retry.max_attempts), wait=self.retry.pause,
                            retry=retry_if_exception_type(RetryableFailure), sleep=self._sleep, reraise=True)
        try:
            response = retrying(self._attempt, method, url, json=json, headers=headers,
                                numbers=itertools.count(1), observe=observe)
        except RetryableFailure as failure:
            self._account_exhausted(failure.attempt)
            raise RetriesExhausted(failure.attempt) from None
        except Refused:
            self.breaker.record_success()  # it answered: it is up, whatever it thought of the request
            raise
        except Unsendable:
            if self._unsendable_proves_up:
                self.breaker.record_success()
            else:
                self.breaker.release()
            raise
        except BaseException:
            self.breaker.release()  # e.g. an interrupt or a bug: nothing learnt about the server
            raise
        self.breaker.record_success()
        return response

    def probe(self, path: str, *, timeout: httpx.Timeout) -> bool:
        """Whether ``GET path`` answers 200: no retries and no breaker, since a health probe must
        report the server's state, not work around it."""
        try:
            response = self.client.get(path, timeout=timeout, headers=self.headers())
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def close(self) -> None:
        self.client.close()

    def _account_exhausted(self, last: Attempt) -> None:
        if self._throttling_proves_up and last.status_code == 429:
            self.breaker.record_success()
        else:
            self.breaker.record_failure()

    def _attempt(self, method: str, url: str, *, json: Any, headers: dict[str, str], numbers: Iterator[int],
                 observe: Callable[[Attempt], None] | None) -> httpx.Response:
        number = next(numbers)
        correlation_id = headers[CORRELATION_HEADER]
        started = time.perf_counter()
        try:
            response = self.client.request(method, url, json=json, headers=headers)
        except RETRYABLE_TRANSPORT_ERRORS as exc:
            attempt = Attempt(number, time.perf_counter() - started, correlation_id, no_answer=type(exc),
                              retryable=True)
            _report(observe, attempt)
            raise RetryableFailure(attempt) from None
        except httpx.HTTPError as exc:
            attempt = Attempt(number, time.perf_counter() - started, correlation_id, no_answer=type(exc))
            _report(observe, attempt)
            raise Unsendable(attempt) from None
        status = response.status_code
        if 200 <= status < 300:
            _report(observe, Attempt(number, time.perf_counter() - started, correlation_id, status_code=status))
            return response
        answer = read_error_answer(response, sent_correlation_id=correlation_id, read_body=self._read_error_body)
        attempt = Attempt(number, time.perf_counter() - started, correlation_id, status_code=status, answer=answer,
                          retryable=answer.retryable)
        _report(observe, attempt)
        if answer.retryable:
            raise RetryableFailure(attempt)
        raise Refused(attempt, answer)


def _report(observe: Callable[[Attempt], None] | None, attempt: Attempt) -> None:
    if observe is not None:
        observe(attempt)


class HttpClientLifecycle:
    """What both clients expose about their ``HttpLayer``: the breaker's state, ``close()`` and the
    context manager that calls it."""

    _http: HttpLayer

    @property
    def breaker_state(self) -> str:
        return self._http.breaker.state

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
