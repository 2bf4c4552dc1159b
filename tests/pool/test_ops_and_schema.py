"""/healthz, /readyz (contract section 3) and the OpenAPI document of every /api/v1/ endpoint."""
from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_() -> Client:
    return Client(raise_request_exception=False)


def test_healthz_is_ok_without_a_key(client_):
    response = client_.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_ok_when_database_tome_and_pools_are(client_, default_pool, tome):
    from core.pool.models import Pool

    Pool.objects.exclude(pk=default_pool.pk).delete()  # only pools with pairs
    response = client_.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "tome": "ok", "pools": "ok"}}


def test_readyz_is_503_degraded_while_tome_is_down(client_, default_pool, tome):
    tome.set_faults(outage=True)
    response = client_.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded" and body["checks"]["tome"] == "down" and body["checks"]["database"] == "ok"


def test_readyz_reports_an_empty_pool_as_degraded(client_, default_pool, pool_with_pairs, tome):
    pool_with_pairs("drained", pairs=0)
    response = client_.get("/readyz")
    assert response.status_code == 200  # the fallback still serves: ready, but degraded
    assert response.json()["status"] == "degraded" and response.json()["checks"]["pools"] == "degraded"


def test_pool_health_body(api, default_pool):
    for _ in range(3):
        api.post("/api/v1/reservations", {})
    rid = api.post("/api/v1/reservations", {}).json()["reservation_id"]
    api.post(f"/api/v1/reservations/{rid}/confirm")
    response = api.get("/api/v1/pools/default")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"name", "environment", "available", "reserved", "used", "retired", "target_size",
                         "low_watermark", "refill_enabled", "last_refill_at", "last_refill_status",
                         "consumption_per_hour", "estimated_hours_to_empty"}
    assert (body["available"], body["reserved"], body["used"], body["retired"]) == (46, 3, 1, 0)
    assert body["name"] == "default" and body["environment"] == "UAT"
    assert body["consumption_per_hour"] == 4.0 and body["estimated_hours_to_empty"] == 46 / 4.0


def test_unknown_pool_health_is_404(api):
    response = api.get("/api/v1/pools/no-such-pool")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_openapi_describes_every_endpoint_with_schemas(client_):
    response = client_.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    doc = response.json()
    paths = doc["paths"]
    expected = {
        "/api/v1/reservations": ["post"], "/api/v1/reservations/batch": ["post"],
        "/api/v1/reservations/{reservation_id}": ["get"],
        "/api/v1/reservations/{reservation_id}/confirm": ["post"],
        "/api/v1/reservations/{reservation_id}/release": ["post"],
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
