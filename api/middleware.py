"""Request middleware of the API edge.

``CorrelationIdMiddleware``: every response carries ``X-Correlation-ID`` (contract section 2).

``ApiRequestGuardMiddleware``: for /api/v1/ requests that carry a body, the API key is verified
from the headers *before a single body byte is read* (contract section 2), so a client without a
valid key cannot make a worker wait on its upload; only then is the body read, bounded to 64 KiB,
and handed to the view from memory. Errors answered without reading the body say
``Connection: close``: the unread bytes would otherwise be taken for the next request. A body
that cannot be read is a JSON 400: behind the edge proxy (Caddy, devtools/edge.py), which buffers
whole bodies and cuts stalled clients off, that is the one case still reaching here — a malformed or
over-limit chunked body Caddy forwards cut short. The 408 branch only serves a server run without the
proxy (the Django test server).
Every /api/v1/ response gets ``Cache-Control: no-store`` (they carry tokens).

``DatabaseDeadlineMiddleware``: every query of a request (API, admin, probes) is cut off after
``DB_REQUEST_QUERY_TIMEOUT_SECONDS``, so a frozen PostgreSQL answers 503 ``database_unavailable``
instead of hanging the request (common/postgresql/deadline.py).

``HtmlCSPMiddleware``: django-csp's Content-Security-Policy, left off JSON responses (a browser
renders no page from them, so a policy there protects nothing) where building it cost about a tenth
of an API request's CPU; the admin, the dashboard and the docs keep it.
"""
from __future__ import annotations

import io
from collections.abc import Callable

from csp.middleware import CSPMiddleware
from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from rest_framework import exceptions as drf

from api.auth import KEYWORD, VERIFIED_ATTR, client_address, verify_api_key
from api.errors import error_response, response_for_exception
from common.errors import PayloadTooLarge
from common.postgresql.deadline import query_deadline
from tokenpool_tome.correlation import accept_or_generate, correlation_scope

__all__ = ["API_V1_PREFIX", "ApiRequestGuardMiddleware", "CorrelationIdMiddleware", "DatabaseDeadlineMiddleware",
           "HtmlCSPMiddleware"]

API_V1_PREFIX = "/api/v1/"
_READ_CHUNK = 16 * 1024


class DatabaseDeadlineMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.seconds = float(settings.DB_REQUEST_QUERY_TIMEOUT_SECONDS)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with query_deadline(self.seconds):
            return self.get_response(request)


class CorrelationIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        correlation_id = accept_or_generate(request.headers.get("X-Correlation-ID"))
        request.correlation_id = correlation_id
        with correlation_scope(correlation_id):
            response = self.get_response(request)
        response["X-Correlation-ID"] = correlation_id
        return response


class HtmlCSPMiddleware(CSPMiddleware):
    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if "json" in response.get("Content-Type", ""):
            return response
        return super().process_response(request, response)


class BodyReadError(Exception):
    """The request body could not be read as framed (malformed chunk, truncated, stalled)."""

    def __init__(self, *, timed_out: bool) -> None:
        super().__init__("request body timed out" if timed_out else "request body unreadable")
        self.timed_out = timed_out


def close_connection(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """Tell the client (and the web server) this connection ends with this response.

    Hop-by-hop headers are the server's business in WSGI: gunicorn honours this one and Caddy
    passes the close on to the client. wsgiref (``runserver``, Django's live test server) refuses them
    outright and drains unread bodies itself, so it is not told."""
    if not request.META.get("SERVER_SOFTWARE", "").startswith("WSGIServer/"):
        response["Connection"] = "close"
    if response.status_code >= 500:  # a 503 while the database is away: logged once, rate-limited
        # Django's log_response() skips a response with this private flag; there is no public one.
        response._has_been_logged = True  # type: ignore[attr-defined]  # noqa: SLF001 - Django offers no public flag
    return response


def has_body(meta: dict) -> bool:
    return bool(meta.get("HTTP_TRANSFER_ENCODING")) or meta.get("CONTENT_LENGTH", "") not in ("", "0")


def declared_length(meta: dict) -> int | None:
    """The announced Content-Length (None for a chunked body); ValueError if it is not a count."""
    if meta.get("HTTP_TRANSFER_ENCODING"):
        return None
    declared = int(meta["CONTENT_LENGTH"])
    if declared < 0:
        raise ValueError(declared)
    return declared


def body_error_response(exc: BodyReadError) -> HttpResponse:
    if exc.timed_out:
        return error_response(status=408, code="request_timeout", detail="The request body did not arrive in time.")
    return error_response(status=400, detail="The request body is not validly framed.")


def read_body(meta: dict, *, declared: int | None, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of the body (so an oversize one is recognised as such)."""
    stream = meta["wsgi.input"]
    want = limit + 1 if declared is None else min(declared, limit + 1)
    parts: list[bytes] = []
    got = 0
    try:
        while got < want:
            chunk = stream.read(min(_READ_CHUNK, want - got))
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
    except TimeoutError as exc:  # the server's read deadline passed (socket.timeout is a TimeoutError)
        raise BodyReadError(timed_out=True) from exc
    except Exception as exc:  # the server's parser refused the framing (e.g. a malformed chunk)
        raise BodyReadError(timed_out=False) from exc
    if declared is not None and got < min(declared, want):
        raise BodyReadError(timed_out=False)  # the client closed before sending what it announced
    return b"".join(parts)


class ApiRequestGuardMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path_info.startswith(API_V1_PREFIX):
            return self.get_response(request)
        response = self._guarded(request)
        response["Cache-Control"] = "no-store"
        return response

    def _guarded(self, request: HttpRequest) -> HttpResponse:
        meta = request.META
        if not has_body(meta):
            return self.get_response(request)  # nothing to protect: DRF authenticates as usual
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            declared = declared_length(meta)
        except ValueError:
            return close_connection(request, error_response(status=400, detail="Invalid Content-Length header."))
        if declared is not None and declared > limit:
            return close_connection(request, response_for_exception(PayloadTooLarge()))

        # 1. The key, from the headers alone.
        refused = self._authenticate(request)
        if refused is not None:
            return close_connection(request, refused)

        # 2. Only now the body: bounded, into memory, so the view never waits on the client.
        try:
            body = read_body(meta, declared=declared, limit=limit)
        except BodyReadError as exc:
            return close_connection(request, body_error_response(exc))
        if len(body) > limit:
            return close_connection(request, response_for_exception(PayloadTooLarge()))
        meta["CONTENT_LENGTH"] = str(len(body))
        # WSGIRequest reads its body from this private stream, set once in __init__; no public setter.
        request._stream = LimitedStream(io.BytesIO(body), len(body))  # noqa: SLF001 - Django has no public API
        return self.get_response(request)

    @staticmethod
    def _authenticate(request: HttpRequest) -> HttpResponse | None:
        """Verify the key from the headers; the refusal response, or None with the key set on the request."""
        meta = request.META
        try:
            api_key = verify_api_key(authorization=meta.get("HTTP_AUTHORIZATION"), address=client_address(meta))
            if api_key is None:
                raise drf.NotAuthenticated()
        except Exception as exc:  # 401, 429, or the database being gone (503): the one mapping
            response = response_for_exception(exc)
            if isinstance(exc, (drf.AuthenticationFailed, drf.NotAuthenticated)):
                response["WWW-Authenticate"] = KEYWORD
            return response
        setattr(request, VERIFIED_ATTR, api_key)
        request.api_key_name = api_key.name  # for the request logger: the key's name, never the key
        return None
