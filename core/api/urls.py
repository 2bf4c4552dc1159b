"""Routes of /api/v1/ (contract section 2)."""
from django.urls import path  # noqa: F401

urlpatterns: list = []
