"""Routes of the pool room under /api/v1/ (contract section 2): reservations, lookup, detokenize.
Included by ``tokenpool/urls.py``; a pool's health (pools/<name>) is the monitoring room's."""
from django.urls import path

from pool import api as pool_api

urlpatterns: list = [
    path("reservations", pool_api.ReservationCreateApi.as_view(), name="reservation-create"),
    # Before the <reservation_id> routes, so "batch" is never taken for an id.
    path("reservations/batch", pool_api.ReservationBatchCreateApi.as_view(), name="reservation-batch-create"),
    path("reservations/confirm/batch", pool_api.ReservationConfirmBatchApi.as_view(),
         name="reservation-confirm-batch"),
    path("reservations/release/batch", pool_api.ReservationReleaseBatchApi.as_view(),
         name="reservation-release-batch"),
    path("reservations/<str:reservation_id>", pool_api.ReservationDetailApi.as_view(), name="reservation-detail"),
    path("reservations/<str:reservation_id>/confirm", pool_api.ReservationConfirmApi.as_view(),
         name="reservation-confirm"),
    path("reservations/<str:reservation_id>/release", pool_api.ReservationReleaseApi.as_view(),
         name="reservation-release"),
    path("lookup", pool_api.LookupApi.as_view(), name="lookup"),
    path("lookup/batch", pool_api.LookupBatchApi.as_view(), name="lookup-batch"),
    path("detokenize", pool_api.DetokenizeApi.as_view(), name="detokenize"),
    path("detokenize/batch", pool_api.DetokenizeBatchApi.as_view(), name="detokenize-batch"),
]
