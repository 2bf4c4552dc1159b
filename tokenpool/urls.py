"""Site routes: each domain room owns its urls.py; this module only includes them by string."""
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

urlpatterns = [
    # /metrics, /healthz, /readyz and /admin/dashboard/ (before admin/)
    path("", include("monitoring.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include("pool.urls")),
    path("api/v1/", include("monitoring.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its start-up script as a file, so the docs need no inline script (CSP).
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="swagger-ui"),
]
