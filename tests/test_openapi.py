"""The OpenAPI document at /api/schema/ describes every /api/v1/ endpoint with its schemas and security."""
from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_openapi_describes_every_endpoint_with_schemas():
    client_ = Client(raise_request_exception=False)
    response = client_.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    doc = response.json()
    paths = doc["paths"]
    expected = {
        "/api/v1/reservations": ["post"], "/api/v1/reservations/batch": ["post"],
        "/api/v1/reservations/{reservation_id}": ["get"],
        "/api/v1/reservations/{reservation_id}/confirm": ["post"],
        "/api/v1/reservations/{reservation_id}/release": ["post"],
        "/api/v1/reservations/confirm/batch": ["post"], "/api/v1/reservations/release/batch": ["post"],
        "/api/v1/lookup": ["post"], "/api/v1/lookup/batch": ["post"],
        "/api/v1/detokenize": ["post"], "/api/v1/detokenize/batch": ["post"],
        "/api/v1/pools/{name}": ["get"],
    }
    for path, methods in expected.items():
        assert path in paths, path
        for method in methods:
            operation = paths[path][method]
            success = operation["responses"].get("200") or operation["responses"]["201"]
            assert success["content"]["application/json"]["schema"], path
            assert "401" in operation["responses"] and "403" in operation["responses"]
            assert operation["security"] == [{"ApiKeyAuth": []}]
            if method == "post":
                assert "requestBody" in operation, path
    reserve = paths["/api/v1/reservations"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in reserve["parameters"])
    assert doc["components"]["securitySchemes"]["ApiKeyAuth"]["name"] == "Authorization"
    schemas = doc["components"]["schemas"]
    lookup_body = paths["/api/v1/lookup"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert lookup_body == {"$ref": "#/components/schemas/LookupInput"}
    assert schemas["LookupInput"]["properties"]["internal_token"]["pattern"] == "^[A-Za-z0-9_-]{1,128}$"
    assert set(schemas["ReservationBatchCreateInput"]["properties"]) >= {"count", "pool"}
    reservation = schemas["ReservationOutput"]["properties"]
    assert {"reservation_id", "pool", "internal_token", "external_ref_id", "status", "source", "owner_ref",
            "reserved_at", "expires_at", "used_at"} <= set(reservation)
