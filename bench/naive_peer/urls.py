from django.urls import path

from bench.naive_peer.views import ReservationCreate

urlpatterns = [path("api/v1/reservations", ReservationCreate.as_view())]
