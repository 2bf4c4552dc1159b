"""Every error the two clients raise, in one place (no Django import: this ships in the client wheel).

Each client has two families, because callers must treat them differently:
- could not answer: ``TomeUnavailable`` / ``TokenPoolUnavailable`` (timeouts, connection errors,
  429/5xx after the retries ran out, or an open circuit). Retrying later may succeed;
  ``retry_after`` says when.
- answered and refused: ``TomeRequestError`` / the ``TokenPoolError`` subclasses named by the
  contract's error ``code`` (4xx other than 429). Retrying the same request cannot succeed, so the
  clients never do.

Messages never carry values, tokens, the bearer token or the API key.
"""
from __future__ import annotations

from typing import Any

__all__ = [
    # HttpTokenizationLibrary
    "TomeError", "TomeUnavailable", "CircuitOpenError", "TomeRequestError", "NamespaceNotFound", "TomeResponseError",
    # TokenPoolClient
    "TokenPoolError", "TokenPoolUnavailable", "InvalidRequest", "NotAuthenticated", "PermissionDenied", "NotFound",
    "ReservationNotActive", "IdempotencyKeyReused", "Throttled", "tokenpool_error_class",
]

# ---- TOME (HttpTokenizationLibrary) ----------------------------------------------------------------


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


# ---- TokenPool (TokenPoolClient) -------------------------------------------------------------------


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


_TOKENPOOL_ERRORS_BY_CODE: dict[str, type[TokenPoolError]] = {
    "invalid_request": InvalidRequest,
    "not_authenticated": NotAuthenticated,
    "permission_denied": PermissionDenied,
    "not_found": NotFound,
    "reservation_not_active": ReservationNotActive,
    "idempotency_key_reused": IdempotencyKeyReused,
    "throttled": Throttled,
}


def tokenpool_error_class(status: int, code: str) -> type[TokenPoolError]:
    """The exception class for a TokenPool error answer: any 5xx is unavailability, whatever its
    code; otherwise the contract's code decides, and an unknown code stays a plain TokenPoolError."""
    if status >= 500:
        return TokenPoolUnavailable
    return _TOKENPOOL_ERRORS_BY_CODE.get(code, TokenPoolError)
