"""``POST /api/v1/reservations``: one SELECT for the key, then SELECT … FOR UPDATE SKIP LOCKED and
an UPDATE inside ``atomic``: the textbook way, what issue 13 §4 calls the naive peer."""
from __future__ import annotations

import uuid

from django.db import transaction
from django.utils import timezone
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bench.naive_peer.models import Pair


class ReservationCreate(APIView):
    class InputSerializer(serializers.Serializer):
        pool = serializers.CharField(max_length=64, default="default")

    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        with transaction.atomic():
            pair = (Pair.objects.select_for_update(skip_locked=True)
                    .filter(pool=data.validated_data["pool"], status="AVAILABLE").order_by("id").first())
            if pair is None:
                return Response({"error": "pool_empty"}, status=503)
            pair.status = "RESERVED"
            pair.reservation_id = uuid.uuid4()
            pair.reserved_by = request.auth
            pair.reserved_at = timezone.now()
            pair.save(update_fields=["status", "reservation_id", "reserved_by", "reserved_at"])
        return Response({"reservation_id": str(pair.reservation_id), "internal_token": pair.internal_token,
                         "external_ref_id": pair.external_ref_id}, status=201)
