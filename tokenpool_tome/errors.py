"""Errors raised by the TokenizationLibrary (no Django import: this ships in the client wheel).

Two families, because callers must treat them differently:
- ``TomeUnavailable`` — TOME could not answer (timeouts, connection errors, 429/5xx after the
  retries ran out, or the circuit is open). Retrying later may succeed; ``retry_after`` says when.
- ``TomeRequestError`` — TOME answered and refused the request (4xx other than 429). Retrying the
  same request cannot succeed, so the client never does.

Messages never carry values, tokens or the bearer token.
"""
from __future__ import annotations


class TomeError(Exception):
    """Base class of every error the TOME client raises."""


class TomeUnavailable(TomeError):
    """TOME did not answer usefully; the call may succeed later."""

    def __init__(self, message: str, *, retry_after: float | None = None,
                 status_code: int | None = None, attempts: int = 0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status_code = status_code
        self.attempts = attempts


class CircuitOpenError(TomeUnavailable):
    """The circuit breaker is open: the call failed fast without touching the network.

    ``retry_after`` is the number of seconds until the breaker lets a trial call through.
    """

    def __init__(self, message: str = "TOME circuit breaker is open", *,
                 retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after, status_code=None, attempts=0)


class TomeRequestError(TomeError):
    """TOME rejected the request (4xx other than 429). Never retried."""

    def __init__(self, message: str, *, status: int, code: str) -> None:
        super().__init__(f"TOME {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class NamespaceNotFound(TomeRequestError):
    """The namespace does not exist in TOME (404 ``namespace_not_found``)."""


class TomeResponseError(TomeError):
    """TOME answered 2xx with a body that does not match the API (wrong shape or length)."""
