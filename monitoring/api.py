"""HTTP API of the monitoring room: GET /api/v1/pools/{name}, a pool's health (contract section 2).

Here and not in pool because the body combines the pool's counts with refill history and the
consumption rate, which are monitoring's reads."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from api.base import ScopedApiView, error_responses
from keys.models import ApiScope
from monitoring.selectors import pool_health
from pool.selectors import pool_get


class PoolHealthOutput(serializers.Serializer):
    name = serializers.CharField()
    environment = serializers.CharField()
    available = serializers.IntegerField()
    reserved = serializers.IntegerField()
    used = serializers.IntegerField()
    retired = serializers.IntegerField()
    target_size = serializers.IntegerField()
    low_watermark = serializers.IntegerField()
    refill_enabled = serializers.BooleanField()
    last_refill_at = serializers.DateTimeField(allow_null=True)
    last_refill_status = serializers.CharField(allow_null=True)
    consumption_per_hour = serializers.FloatField()
    estimated_hours_to_empty = serializers.FloatField(allow_null=True)


class PoolDetailApi(ScopedApiView):
    required_scope = ApiScope.POOLS_READ

    @extend_schema(operation_id="pool_get", responses={200: PoolHealthOutput, **error_responses(401, 403, 404, 429)})
    def get(self, request: Request, name: str) -> Response:
        return Response(PoolHealthOutput(pool_health(pool=pool_get(name=name))).data)
