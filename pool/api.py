"""HTTP API of the pool room (contract section 2). Views only translate: validate the input, call a
service or selector, serialize the output. Errors are raised, never built here."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from api.base import ScopedApiView, error_responses, validated
from api.fields import StrictCharField, StrictIntegerField, StrictUUIDField, TokenField
from keys.models import ApiScope
from pool.models import TokenPair
from pool.selectors import pool_get_cached
from pool.services import (
    MAX_BATCH_RESERVATIONS,
    MAX_BATCH_TRANSITIONS,
    PairResult,
    pair_detokenize,
    pair_detokenize_batch,
    pair_lookup,
    pair_lookup_batch,
    reservation_batch_create,
    reservation_confirm,
    reservation_create,
    reservation_current,
    reservation_release,
    reservations_confirm_batch,
    reservations_release_batch,
)
from pool.services.reservations import IDEMPOTENCY_KEY_MAX_LENGTH, IDEMPOTENCY_KEY_REGEX

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH, "pattern": IDEMPOTENCY_KEY_REGEX},
    OpenApiParameter.HEADER, required=False,
    description="1-255 characters of A-Z, a-z, 0-9, '.', '_', ':', '-' (anything else → 400 invalid_request). "
                "The same key with the same body returns the same reservation(s); with a different body → 422 "
                "idempotency_key_reused.",
)
RESERVATION_ID = OpenApiParameter("reservation_id", OpenApiTypes.UUID, OpenApiParameter.PATH)
MAX_BATCH_TOKENS = 1000


# ---- output ----------------------------------------------------------------------------------------

class ReservationOutput(serializers.Serializer):
    reservation_id = serializers.UUIDField()
    pool = serializers.CharField(source="pool_name")
    internal_token = serializers.CharField()
    external_ref_id = serializers.CharField()
    status = serializers.ChoiceField(choices=["RESERVED", "USED", "RETIRED"])
    source = serializers.ChoiceField(choices=["pool", "direct"])
    owner_ref = serializers.CharField(allow_null=True)
    reserved_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    used_at = serializers.DateTimeField(allow_null=True)


def _iso(value: datetime | None) -> str | None:
    # Exactly DRF's DateTimeField output: ISO 8601 in UTC, "Z" for the offset.
    if value is None:
        return None
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def reservation_body(pair: TokenPair) -> dict[str, Any]:
    """The reservation body (schema: ``ReservationOutput``), built by hand on the hot path: a DRF
    Serializer deep-copies its declared fields on every instantiation, which measured as much as
    the claim's own SQL round trip. tests/pool/test_reservations.py checks both agree."""
    return {
        "reservation_id": str(pair.reservation_id),
        "pool": pair.pool_name,
        "internal_token": pair.internal_token,
        "external_ref_id": pair.external_ref_id,
        "status": pair.status,
        "source": pair.source,
        "owner_ref": pair.owner_ref,
        "reserved_at": _iso(pair.reserved_at),
        "expires_at": _iso(pair.expires_at),
        "used_at": _iso(pair.used_at),
    }


class ReservationListOutput(serializers.Serializer):
    reservations = ReservationOutput(many=True)


class PairOutput(serializers.Serializer):
    internal_token = serializers.CharField()
    external_ref_id = serializers.CharField()
    status = serializers.ChoiceField(choices=["RESERVED", "USED", "RETIRED"])
    source = serializers.ChoiceField(choices=["pool", "tome"],
                                     help_text="tome: not in the database, resolved by a live NS2 call.")


def _pair_body(result: PairResult) -> dict[str, str]:
    return {"internal_token": result.internal_token, "external_ref_id": result.external_ref_id,
            "status": result.status, "source": result.source}


def _batch_body(*, keys: list[str], results: list[PairResult | None], key_field: str) -> dict[str, list]:
    """One entry per requested key, in request order: the pair, or ``{key_field: key, "code": "not_found"}``."""
    return {"results": [_pair_body(r) if r is not None else {key_field: k, "code": "not_found"}
                        for k, r in zip(keys, results, strict=True)]}


class LookupBatchItem(serializers.Serializer):
    internal_token = serializers.CharField()
    external_ref_id = serializers.CharField(required=False)
    status = serializers.CharField(required=False)
    source = serializers.CharField(required=False)
    code = serializers.CharField(required=False, help_text='"not_found" for an unknown item.')


class LookupBatchOutput(serializers.Serializer):
    results = LookupBatchItem(many=True)


class DetokenizeBatchItem(LookupBatchItem):
    internal_token = serializers.CharField(required=False)
    external_ref_id = serializers.CharField()


class DetokenizeBatchOutput(serializers.Serializer):
    results = DetokenizeBatchItem(many=True)


# ---- reservations ----------------------------------------------------------------------------------

class ReservationCreateApi(ScopedApiView):
    required_scope = ApiScope.RESERVE

    @extend_schema_serializer(component_name="ReservationCreateInput")
    class InputSerializer(serializers.Serializer):
        pool = StrictCharField(required=False, max_length=64)
        owner_ref = StrictCharField(required=False, allow_null=True, max_length=128)

    @extend_schema(operation_id="reservation_create", request=InputSerializer, parameters=[IDEMPOTENCY_HEADER],
                   responses={201: ReservationOutput,
                              200: OpenApiResponse(ReservationOutput, description="Idempotent replay."),
                              **error_responses(400, 401, 403, 404, 413, 415, 422, 429, 503)})
    def post(self, request: Request) -> Response:
        data = validated(self.InputSerializer, request.data)
        pair, created = reservation_create(pool=pool_get_cached(name=data.get("pool")), api_key=request.auth,
                                           idempotency_key=request.headers.get("Idempotency-Key"),
                                           owner_ref=data.get("owner_ref"))
        return Response(reservation_body(pair), status=201 if created else 200)


class ReservationBatchCreateApi(ScopedApiView):
    required_scope = ApiScope.RESERVE
    cost_field = "count"

    @extend_schema_serializer(component_name="ReservationBatchCreateInput")
    class InputSerializer(serializers.Serializer):
        count = StrictIntegerField(min_value=1, max_value=MAX_BATCH_RESERVATIONS)
        pool = StrictCharField(required=False, max_length=64)
        owner_ref = StrictCharField(required=False, allow_null=True, max_length=128)

    @extend_schema(operation_id="reservation_batch_create", request=InputSerializer,
                   parameters=[IDEMPOTENCY_HEADER],
                   responses={201: ReservationListOutput,
                              200: OpenApiResponse(ReservationListOutput, description="Idempotent replay."),
                              **error_responses(400, 401, 403, 404, 413, 415, 422, 429, 503)})
    def post(self, request: Request) -> Response:
        data = validated(self.InputSerializer, request.data)
        pairs, created = reservation_batch_create(
            pool=pool_get_cached(name=data.get("pool")), api_key=request.auth, count=data["count"],
            idempotency_key=request.headers.get("Idempotency-Key"), owner_ref=data.get("owner_ref"))
        return Response({"reservations": [reservation_body(p) for p in pairs]}, status=201 if created else 200)


class ReservationDetailApi(ScopedApiView):
    required_scope = ApiScope.RESERVE

    @extend_schema(operation_id="reservation_get", parameters=[RESERVATION_ID],
                   responses={200: ReservationOutput, **error_responses(401, 403, 404, 429)})
    def get(self, request: Request, reservation_id: str) -> Response:
        pair = reservation_current(reservation_id=reservation_id, api_key=request.auth)
        return Response(reservation_body(pair))


class ReservationConfirmApi(ScopedApiView):
    required_scope = ApiScope.RESERVE

    @extend_schema_serializer(component_name="ReservationConfirmInput")
    class InputSerializer(serializers.Serializer):
        owner_ref = StrictCharField(required=False, allow_null=True, max_length=128)

    @extend_schema(operation_id="reservation_confirm", request=InputSerializer, parameters=[RESERVATION_ID],
                   responses={200: ReservationOutput, **error_responses(400, 401, 403, 404, 409, 413, 415, 429)})
    def post(self, request: Request, reservation_id: str) -> Response:
        data = validated(self.InputSerializer, request.data)
        pair = reservation_confirm(reservation_id=reservation_id, api_key=request.auth,
                                   owner_ref=data.get("owner_ref"))
        return Response(reservation_body(pair))


class ReservationReleaseApi(ScopedApiView):
    required_scope = ApiScope.RESERVE

    @extend_schema_serializer(component_name="ReservationReleaseInput")
    class InputSerializer(serializers.Serializer):
        pass

    @extend_schema(operation_id="reservation_release", request={"application/json": OpenApiTypes.OBJECT},
                   parameters=[RESERVATION_ID],
                   responses={200: ReservationOutput, **error_responses(400, 401, 403, 404, 409, 413, 415, 429)})
    def post(self, request: Request, reservation_id: str) -> Response:
        validated(self.InputSerializer, request.data)
        pair = reservation_release(reservation_id=reservation_id, api_key=request.auth)
        return Response(reservation_body(pair))


class ReservationBatchItem(serializers.Serializer):
    """A reservation body, or ``{"reservation_id", "code"}`` for an item its single form would refuse."""

    reservation_id = serializers.UUIDField()
    pool = serializers.CharField(required=False)
    internal_token = serializers.CharField(required=False)
    external_ref_id = serializers.CharField(required=False)
    status = serializers.ChoiceField(choices=["RESERVED", "USED", "RETIRED"], required=False)
    source = serializers.ChoiceField(choices=["pool", "direct"], required=False)
    owner_ref = serializers.CharField(allow_null=True, required=False)
    reserved_at = serializers.DateTimeField(required=False)
    expires_at = serializers.DateTimeField(required=False)
    used_at = serializers.DateTimeField(allow_null=True, required=False)
    code = serializers.ChoiceField(choices=["not_found", "reservation_not_active"], required=False,
                                   help_text="Set instead of the reservation's fields when the item was refused.")


class ReservationBatchResultsOutput(serializers.Serializer):
    results = ReservationBatchItem(many=True)


class ReservationIdsInput(serializers.Serializer):
    reservation_ids = serializers.ListField(child=StrictUUIDField(), min_length=1, max_length=MAX_BATCH_TRANSITIONS)


def _transition_body(ids: list[Any], results: list[TokenPair | str]) -> dict[str, list[dict[str, Any]]]:
    return {"results": [reservation_body(r) if isinstance(r, TokenPair) else {"reservation_id": str(rid), "code": r}
                        for rid, r in zip(ids, results, strict=True)]}


class ReservationConfirmBatchApi(ScopedApiView):
    """Contract section 2: each id as its single confirm; the answer in request order."""

    required_scope = ApiScope.RESERVE
    cost_field = "reservation_ids"

    @extend_schema_serializer(component_name="ReservationConfirmBatchInput")
    class InputSerializer(ReservationIdsInput):
        pass

    @extend_schema(operation_id="reservation_confirm_batch", request=InputSerializer,
                   responses={200: ReservationBatchResultsOutput, **error_responses(400, 401, 403, 413, 415, 429)})
    def post(self, request: Request) -> Response:
        ids = validated(self.InputSerializer, request.data)["reservation_ids"]
        return Response(_transition_body(ids, reservations_confirm_batch(reservation_ids=ids, api_key=request.auth)))


class ReservationReleaseBatchApi(ScopedApiView):
    """Not in the contract: what the buffered TokenPoolClient's close() uses to give back its unused
    pairs in one call. Each id as its single release; the answer in request order."""

    required_scope = ApiScope.RESERVE
    cost_field = "reservation_ids"

    @extend_schema_serializer(component_name="ReservationReleaseBatchInput")
    class InputSerializer(ReservationIdsInput):
        pass

    @extend_schema(operation_id="reservation_release_batch", request=InputSerializer,
                   responses={200: ReservationBatchResultsOutput, **error_responses(400, 401, 403, 413, 415, 429)})
    def post(self, request: Request) -> Response:
        ids = validated(self.InputSerializer, request.data)["reservation_ids"]
        return Response(_transition_body(ids, reservations_release_batch(reservation_ids=ids, api_key=request.auth)))


# ---- lookup and detokenize -------------------------------------------------------------------------

class LookupApi(ScopedApiView):
    required_scope = ApiScope.LOOKUP

    @extend_schema_serializer(component_name="LookupInput")
    class InputSerializer(serializers.Serializer):
        internal_token = TokenField()

    @extend_schema(operation_id="lookup", request=InputSerializer,
                   responses={200: PairOutput, **error_responses(400, 401, 403, 404, 413, 415, 429, 503)})
    def post(self, request: Request) -> Response:
        data = validated(self.InputSerializer, request.data)
        return Response(_pair_body(pair_lookup(internal_token=data["internal_token"], api_key=request.auth)))


class DetokenizeApi(ScopedApiView):
    required_scope = ApiScope.DETOKENIZE

    @extend_schema_serializer(component_name="DetokenizeInput")
    class InputSerializer(serializers.Serializer):
        external_ref_id = TokenField()

    @extend_schema(operation_id="detokenize", request=InputSerializer,
                   responses={200: PairOutput, **error_responses(400, 401, 403, 404, 413, 415, 429, 503)})
    def post(self, request: Request) -> Response:
        data = validated(self.InputSerializer, request.data)
        return Response(_pair_body(pair_detokenize(external_ref_id=data["external_ref_id"], api_key=request.auth)))


class LookupBatchApi(ScopedApiView):
    required_scope = ApiScope.LOOKUP
    cost_field = "internal_tokens"

    @extend_schema_serializer(component_name="LookupBatchInput")
    class InputSerializer(serializers.Serializer):
        internal_tokens = serializers.ListField(child=TokenField(), min_length=1, max_length=MAX_BATCH_TOKENS)

    @extend_schema(operation_id="lookup_batch", request=InputSerializer,
                   responses={200: LookupBatchOutput, **error_responses(400, 401, 403, 413, 415, 429, 503)})
    def post(self, request: Request) -> Response:
        tokens = validated(self.InputSerializer, request.data)["internal_tokens"]
        results = pair_lookup_batch(internal_tokens=tokens, api_key=request.auth)
        return Response(_batch_body(keys=tokens, results=results, key_field="internal_token"))


class DetokenizeBatchApi(ScopedApiView):
    required_scope = ApiScope.DETOKENIZE
    cost_field = "external_ref_ids"

    @extend_schema_serializer(component_name="DetokenizeBatchInput")
    class InputSerializer(serializers.Serializer):
        external_ref_ids = serializers.ListField(child=TokenField(), min_length=1, max_length=MAX_BATCH_TOKENS)

    @extend_schema(operation_id="detokenize_batch", request=InputSerializer,
                   responses={200: DetokenizeBatchOutput, **error_responses(400, 401, 403, 413, 415, 429, 503)})
    def post(self, request: Request) -> Response:
        ids = validated(self.InputSerializer, request.data)["external_ref_ids"]
        results = pair_detokenize_batch(external_ref_ids=ids, api_key=request.auth)
        return Response(_batch_body(keys=ids, results=results, key_field="external_ref_id"))
