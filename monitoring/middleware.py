"""One JSON log line per HTTP request, and the request-duration histogram behind /metrics.

Sits right after ``CorrelationIdMiddleware`` so the line carries the request's correlation id.
Only the route pattern is logged, never the raw path or query string, the body or a header: a
token or key a client put in a URL must not reach the logs.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from monitoring.metrics import observe_request

logger = logging.getLogger("tokenpool.request")

UNMATCHED = "<unmatched>"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
OTHER_METHOD = "other"


def request_endpoint(request: HttpRequest) -> str:
    """The URL route that served the request (``/api/v1/reservations/<str:reservation_id>``).

    A route, not a path: the metric label set stays bounded whatever clients send.
    """
    match = getattr(request, "resolver_match", None)
    if match is None or match.route is None:
        return UNMATCHED
    return "/" + match.route.lstrip("^").rstrip("$")


def request_method(request: HttpRequest) -> str:
    """The request's method if it is a standard HTTP one, else ``other``.

    Clients may send any token as the method (``PROPFIND``, random strings): as a metric label each
    would become a new time series, so the label set is kept to these ten values."""
    method = request.method or ""
    return method if method in HTTP_METHODS else OTHER_METHOD


class RequestLogMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed = time.perf_counter() - started
        endpoint = request_endpoint(request)
        observe_request(endpoint=endpoint, method=request_method(request), seconds=elapsed)
        level = logging.ERROR if response.status_code >= 500 else logging.INFO
        logger.log(level, "request", extra={
            "api_key_name": getattr(request, "api_key_name", None),
            "endpoint": endpoint,
            "method": request.method,
            "status": response.status_code,
            "duration_ms": round(elapsed * 1000, 2),
        })
        return response
