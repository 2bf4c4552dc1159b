"""Routes of the monitoring room under /api/v1/ (included by ``tokenpool/urls.py``)."""
from django.urls import path

from monitoring.api import PoolDetailApi

urlpatterns = [
    path("pools/<str:name>", PoolDetailApi.as_view(), name="pool-detail"),
]
