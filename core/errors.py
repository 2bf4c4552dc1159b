"""The one domain exception hierarchy. Each error knows its contract ``code`` and HTTP status;
``core.api.errors.exception_handler`` turns them (and DRF's and Django's) into the contract body."""
from __future__ import annotations


class TokenPoolError(Exception):
    code = "internal_error"
    status = 500
    detail = "An unexpected error occurred."

    def __init__(self, detail: str | None = None, *, errors: dict[str, list[str]] | None = None,
                 retry_after: float | None = None) -> None:
        self.detail = detail or self.detail
        self.errors = errors
        self.retry_after = retry_after
        super().__init__(self.detail)


class InvalidRequest(TokenPoolError):
    code, status, detail = "invalid_request", 400, "The request is invalid."


class DomainRuleViolation(InvalidRequest):
    """A business rule refused the action (e.g. an onboarding prerequisite is not approved)."""


class NotFound(TokenPoolError):
    code, status, detail = "not_found", 404, "Not found."


class PoolNotFound(NotFound):
    detail = "Unknown pool."


class ReservationNotFound(NotFound):
    detail = "Unknown reservation."


class PairNotFound(NotFound):
    detail = "Unknown token."


class ReservationNotActive(TokenPoolError):
    code, status, detail = "reservation_not_active", 409, "The reservation is not active."


class IdempotencyKeyReused(TokenPoolError):
    code, status = "idempotency_key_reused", 422
    detail = "This Idempotency-Key was already used with a different request body."


class PoolUnavailable(TokenPoolError):
    code, status = "pool_unavailable", 503
    detail = "The pool is empty and TOME is unreachable; retry later."


class UpstreamUnavailable(TokenPoolError):
    code, status = "upstream_unavailable", 503
    detail = "TOME is unreachable and the database cannot answer this request; retry later."


class PayloadTooLarge(TokenPoolError):
    code, status = "payload_too_large", 413
    detail = "The request body is larger than 64 KiB."


class DatabaseUnavailable(TokenPoolError):
    code, status = "database_unavailable", 503
    detail = "The database cannot be reached; retry later."
