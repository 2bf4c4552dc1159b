"""The URL configuration of ``bench_reserve --inprocess``: the project's URLs plus one authenticated
DRF no-op (``POST /api/v1/bench-noop``), the floor under which no API request gets."""
from __future__ import annotations

from typing import Any

from django.urls import path
from rest_framework.response import Response

from api.base import ScopedApiView
from tokenpool.urls import urlpatterns as project_urlpatterns


class NoopApi(ScopedApiView):
    required_scope = "reserve"

    def post(self, request: Any) -> Response:
        return Response({"ok": True}, status=201)


urlpatterns = [path("api/v1/bench-noop", NoopApi.as_view()), *project_urlpatterns]
