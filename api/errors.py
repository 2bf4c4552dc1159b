"""The one place that turns errors into the contract's error body (contract section 2, "Errors").

``{"code", "detail", "correlation_id"}`` plus ``errors`` for validation errors, for every 4xx/5xx
under /api/: DRF's exceptions and ours through ``exception_handler`` (DRF's EXCEPTION_HANDLER), and
whatever happens outside a DRF view (unknown URL, an oversize body, a crash in middleware) through
``ApiErrorMiddleware``. No view builds an error response by hand.

A lost database (connection refused or dropped: Django's/psycopg's ``OperationalError`` and
``InterfaceError``) is a 503 ``database_unavailable`` with ``Retry-After``, logged at most once per
``DATABASE_ERROR_LOG_SECONDS`` with the number of lines suppressed in between: an outage under load
must not write a stack per request. The next request after recovery simply works (Django's
``CONN_HEALTH_CHECKS`` reconnects).
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from django.conf import settings
from django.core.exceptions import BadRequest, PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from rest_framework import exceptions as drf
from rest_framework.views import set_rollback

from common.errors import (
    DatabaseUnavailable,
    PayloadTooLarge,
    Throttled,
    TokenPoolError,
    code_for_status,
    detail_for_status,
)
from tokenpool_tome.correlation import get_correlation_id, new_correlation_id

__all__ = ["exception_handler", "error_response", "response_for_exception", "ApiErrorMiddleware", "API_PREFIX",
           "DATABASE_ERRORS", "RateLimitedLog"]

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"

# What "the database cannot be reached" looks like from Django and from psycopg directly.
DATABASE_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError, psycopg.OperationalError,
                                                psycopg.InterfaceError)
DATABASE_RETRY_AFTER_SECONDS = 5


class RateLimitedLog:
    """At most one line per ``interval`` seconds; the next line says how many were suppressed."""

    def __init__(self, log: logging.Logger, *, interval: float) -> None:
        self.log = log
        self.interval = interval
        self._lock = threading.Lock()
        self._next = 0.0
        self._suppressed = 0

    def error(self, message: str, *, exc: BaseException) -> bool:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._suppressed += 1
                return False
            suppressed, self._suppressed = self._suppressed, 0
            self._next = now + self.interval
        self.log.error(message, exc_info=(type(exc), exc, exc.__traceback__),
                       extra={"suppressed_since_last": suppressed, "log_interval_seconds": self.interval})
        return True


database_error_log = RateLimitedLog(logger, interval=30.0)


def error_response(*, status: int, code: str | None = None, detail: str | None = None,
                   errors: dict[str, list[str]] | None = None, retry_after: float | None = None,
                   headers: dict[str, str] | None = None) -> HttpResponse:
    body: dict[str, Any] = {
        "code": code or code_for_status(status),
        "detail": detail or detail_for_status(status),
        "correlation_id": get_correlation_id() or new_correlation_id(),
    }
    if errors is not None:
        body["errors"] = errors
    response = HttpResponse(json.dumps(body), status=status, content_type="application/json")
    if retry_after is not None:
        response["Retry-After"] = str(max(1, math.ceil(retry_after)))
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def flatten_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error structure → ``{"field": [...], "internal_tokens.3": [...]}``."""
    out: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            out.update(flatten_errors(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(detail, list) and any(isinstance(item, (dict, list)) for item in detail):
        for index, item in enumerate(detail):
            if item:
                out.update(flatten_errors(item, f"{prefix}.{index}" if prefix else str(index)))
    else:
        messages = detail if isinstance(detail, list) else [detail]
        out[prefix or "non_field_errors"] = [str(message) for message in messages]
    return out


_DRF_STATUS: list[tuple[type[Exception], int]] = [
    (drf.ValidationError, 400),
    (drf.ParseError, 400),
    (drf.AuthenticationFailed, 401),
    (drf.NotAuthenticated, 401),
    (drf.PermissionDenied, 403),
    (drf.NotFound, 404),
    (drf.MethodNotAllowed, 405),
    (drf.UnsupportedMediaType, 415),
    (drf.Throttled, 429),
]


def response_for_exception(exc: Exception) -> HttpResponse:
    """The contract response for any exception (the one mapping; middleware and views use it)."""
    if isinstance(exc, DATABASE_ERRORS):
        database_error_log.interval = settings.DATABASE_ERROR_LOG_SECONDS
        database_error_log.error("database unavailable", exc=exc)
        exc = DatabaseUnavailable(retry_after=DATABASE_RETRY_AFTER_SECONDS)
    if isinstance(exc, TokenPoolError):
        return error_response(status=exc.status, code=exc.code, detail=exc.detail, errors=exc.errors,
                              retry_after=exc.retry_after)
    if isinstance(exc, drf.APIException):
        return _response_for_drf_exception(exc)
    response = _response_for_django_exception(exc)
    if response is not None:
        return response
    # Anything else is our bug: log it with its traceback, tell the client nothing about internals.
    logger.error("unhandled exception", exc_info=(type(exc), exc, exc.__traceback__))
    return error_response(status=500)


def _response_for_drf_exception(exc: drf.APIException) -> HttpResponse:
    """DRF's exceptions: validation and parse errors with their bodies, the rest by status."""
    if isinstance(exc, drf.ValidationError):
        return error_response(status=400, detail="The request is invalid.", errors=flatten_errors(exc.detail))
    if isinstance(exc, drf.ParseError):
        return error_response(status=400, detail="The request body is not valid JSON.")
    status = next((s for cls, s in _DRF_STATUS if isinstance(exc, cls)), exc.status_code)
    detail = exc.detail if isinstance(exc.detail, str) else None
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    retry_after = getattr(exc, "wait", None) if isinstance(exc, drf.Throttled) else None
    if isinstance(exc, drf.Throttled):
        detail = Throttled.detail
    return error_response(status=status, detail=str(detail) if detail else None,
                          retry_after=retry_after, headers=headers)


def _response_for_django_exception(exc: Exception) -> HttpResponse | None:
    """Django's request exceptions mapped to their 4xx; None for anything else."""
    if isinstance(exc, Http404):
        return error_response(status=404)
    if isinstance(exc, PermissionDenied):
        return error_response(status=403)
    if isinstance(exc, RequestDataTooBig):
        return response_for_exception(PayloadTooLarge())
    if isinstance(exc, (BadRequest, SuspiciousOperation)):
        return error_response(status=400)
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse:
    """DRF's EXCEPTION_HANDLER: every exception raised in a DRF view ends here."""
    set_rollback()
    return response_for_exception(exc)


class ApiErrorMiddleware:
    """Contract error bodies for what happens under /api/ outside DRF's reach.

    - exceptions from non-DRF views and middleware are mapped like DRF's;
    - any other 4xx/5xx that is not JSON already (Django's 404 page for an unknown URL, a 405 of a
      plain view, a 500 page) is replaced by the contract body, keeping Allow/Retry-After/Connection.

    5xx responses under /api/ are marked as logged: ``RequestLogMiddleware`` writes one line per
    request already and the cause was logged (rate-limited) where it was mapped; Django's own
    ``django.request`` ERROR line would repeat it per request during a database outage. Request
    bodies are ``ApiRequestGuardMiddleware``'s business."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        response = self.get_response(request)
        if response.status_code >= 400:
            if not response.get("Content-Type", "").startswith("application/json"):
                kept = {name: response[name] for name in ("Allow", "Retry-After", "WWW-Authenticate", "Connection")
                        if response.has_header(name)}
                response = error_response(status=response.status_code, headers=kept)
            if response.status_code >= 500:
                # Django's log_response() reads this private flag; there is no public way to say "logged".
                response._has_been_logged = True  # type: ignore[attr-defined]  # noqa: SLF001 - Django offers no public flag
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not request.path_info.startswith(API_PREFIX):
            return None
        return response_for_exception(exception)
