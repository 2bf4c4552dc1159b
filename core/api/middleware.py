"""Correlation id middleware: every response carries ``X-Correlation-ID`` (contract section 2)."""
from __future__ import annotations

from typing import Callable

from django.http import HttpRequest, HttpResponse

from tokenpool_tome.correlation import accept_or_generate, correlation_scope


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
