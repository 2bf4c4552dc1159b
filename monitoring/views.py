"""GET /metrics (contract section 3): Prometheus text format, no API key."""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from monitoring.metrics import CONTENT_TYPE, metrics_render


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(metrics_render(), content_type=CONTENT_TYPE)
