"""Routes of the monitoring room, included at the site root by ``tokenpool/urls.py``
(before ``admin/`` so the dashboard lives under the admin's URL space)."""
from django.urls import path

from monitoring.adoption_view import adoption_view
from monitoring.dashboard import dashboard_view
from monitoring.health import healthz, readyz
from monitoring.views import metrics_view

urlpatterns = [
    path("metrics", metrics_view, name="metrics"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("admin/dashboard/", dashboard_view, name="monitoring-dashboard"),
    path("admin/adoption/", adoption_view, name="monitoring-adoption"),
]
