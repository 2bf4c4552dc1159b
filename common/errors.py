"""The one domain exception hierarchy and the contract's error table (contract section 2, "Errors").

Each error knows its contract ``code``, HTTP status and default sentence;
``api.errors.exception_handler`` turns them (and DRF's and Django's) into the contract body.
Everything else that needs a code for a status (the generic errors of DRF, Django or the server,
the OpenAPI descriptions) derives it from the classes here. No Django import: the gunicorn worker
may use this module before Django is set up."""
from __future__ import annotations

from http import HTTPStatus


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


class NotAuthenticated(TokenPoolError):
    code, status = "not_authenticated", 401
    detail = "Authentication credentials were not provided or are not valid."


class PermissionDenied(TokenPoolError):
    code, status, detail = "permission_denied", 403, "You do not have permission to perform this action."


class NotFound(TokenPoolError):
    code, status, detail = "not_found", 404, "Not found."


class PoolNotFound(NotFound):
    detail = "Unknown pool."


class ReservationNotFound(NotFound):
    detail = "Unknown reservation."


class PairNotFound(NotFound):
    detail = "Unknown token."


class MethodNotAllowed(TokenPoolError):
    code, status, detail = "method_not_allowed", 405, "Method not allowed."


class ReservationNotActive(TokenPoolError):
    code, status, detail = "reservation_not_active", 409, "The reservation is not active."


class IdempotencyKeyReused(TokenPoolError):
    code, status = "idempotency_key_reused", 422
    detail = "This Idempotency-Key was already used with a different request body."


class UnsupportedMediaType(TokenPoolError):
    code, status, detail = "unsupported_media_type", 415, "Unsupported media type; send application/json."


class Throttled(TokenPoolError):
    code, status, detail = "throttled", 429, "Too many requests; slow down."


class ServiceUnavailable(TokenPoolError):
    """A 503 that is none of the specific ones below (e.g. Django's or the server's own)."""

    code, status, detail = "service_unavailable", 503, "The service is unavailable; retry later."


class PoolUnavailable(ServiceUnavailable):
    code, status = "pool_unavailable", 503
    detail = "The pool is empty and TOME is unreachable; retry later."


class UpstreamUnavailable(ServiceUnavailable):
    code, status = "upstream_unavailable", 503
    detail = "TOME is unreachable and the database cannot answer this request; retry later."


class PayloadTooLarge(TokenPoolError):
    code, status = "payload_too_large", 413
    detail = "The request body is larger than 64 KiB."


class DatabaseUnavailable(ServiceUnavailable):
    code, status = "database_unavailable", 503
    detail = "The database cannot be reached; retry later."


# The generic error of each status: the one whose code and sentence stand for the status when the
# error is not one of ours (DRF's, Django's, the server's).
GENERIC_ERRORS: dict[int, type[TokenPoolError]] = {cls.status: cls for cls in (
    InvalidRequest, NotAuthenticated, PermissionDenied, NotFound, MethodNotAllowed, ReservationNotActive,
    PayloadTooLarge, UnsupportedMediaType, IdempotencyKeyReused, Throttled, TokenPoolError, ServiceUnavailable,
)}
# Statuses whose responses carry Retry-After.
RETRY_AFTER_STATUSES = frozenset({429, 503})


def code_for_status(status: int) -> str:
    """The contract code of a status; statuses the contract does not name get HTTP's own phrase."""
    if status in GENERIC_ERRORS:
        return GENERIC_ERRORS[status].code
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def detail_for_status(status: int) -> str:
    if status in GENERIC_ERRORS:
        return GENERIC_ERRORS[status].detail
    try:
        return HTTPStatus(status).phrase + "."
    except ValueError:
        return "Error."


def codes_for_status(status: int) -> list[str]:
    """Every code an endpoint may answer with ``status`` (the OpenAPI descriptions): the specific
    ones when there are any (503: database/pool/upstream), else the generic one."""
    codes: list[str] = []
    pending = [TokenPoolError]
    while pending:
        cls = pending.pop(0)
        pending.extend(cls.__subclasses__())
        if cls.status == status and cls.code not in codes:
            codes.append(cls.code)
    generic = GENERIC_ERRORS.get(status)
    if generic is not None and len(codes) > 1 and generic.code in codes:
        codes.remove(generic.code)
    return codes or [code_for_status(status)]
