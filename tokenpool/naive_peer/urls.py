from django.urls import path

from tokenpool.naive_peer.views import ReservationCreate

urlpatterns = [path("api/v1/reservations", ReservationCreate.as_view())]
