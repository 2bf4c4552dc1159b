"""The contract's error body for every 4xx/5xx under /api/, and the correlation id on every response."""
from __future__ import annotations

import io
import json

import pytest

from pool.models import TokenPair

pytestmark = pytest.mark.django_db


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["correlation_id"] == response["X-Correlation-ID"]
    return body


def raw_post(api, path: str, data: bytes | str, content_type: str | None = "application/json", **extra):
    kwargs = {"content_type": content_type} if content_type is not None else {}
    return api.client.generic("POST", path, data, **kwargs, **extra)


@pytest.mark.parametrize("payload", [b"{", b"{'single': 'quotes'}", b'{"a": NaN}', b"\xff\xfe", b'{"a": 1,}'])
def test_malformed_json_is_400(api, default_pool, payload):
    assert_error(raw_post(api, "/api/v1/reservations", payload), 400, "invalid_request")


@pytest.mark.parametrize("payload", [[], "text", 5, None])
def test_a_body_that_is_not_an_object_is_400(api, default_pool, payload):
    body = assert_error(raw_post(api, "/api/v1/reservations", json.dumps(payload)), 400, "invalid_request")
    assert body["errors"]


@pytest.mark.parametrize("path,body,field", [
    ("/api/v1/reservations", {"owner_ref": 5}, "owner_ref"),
    ("/api/v1/reservations", {"owner_ref": ["x"]}, "owner_ref"),
    ("/api/v1/reservations", {"owner_ref": "x" * 129}, "owner_ref"),
    ("/api/v1/reservations", {"pool": 7}, "pool"),
    ("/api/v1/reservations/batch", {"count": "3"}, "count"),
    ("/api/v1/lookup", {"internal_token": 1234567890123456}, "internal_token"),
    ("/api/v1/lookup", {}, "internal_token"),
    ("/api/v1/detokenize", {"external_ref_id": None}, "external_ref_id"),
    ("/api/v1/lookup/batch", {"internal_tokens": "abc"}, "internal_tokens"),
    ("/api/v1/lookup/batch", {"internal_tokens": []}, "internal_tokens"),
    ("/api/v1/detokenize/batch", {"external_ref_ids": {"0": "abc"}}, "external_ref_ids"),
])
def test_wrong_json_types_are_400_naming_the_field(api, default_pool, path, body, field):
    response = api.post(path, body)
    assert field in assert_error(response, 400, "invalid_request")["errors"]


@pytest.mark.parametrize("token", ["has space", "semi;colon", "x" * 129, "", "tok\n", "ünïcode", "a.b", "a/b"])
def test_malformed_tokens_are_400_naming_the_field(api, default_pool, token):
    for path, field in (("/api/v1/lookup", "internal_token"), ("/api/v1/detokenize", "external_ref_id")):
        body = assert_error(api.post(path, {field: token}), 400, "invalid_request")
        assert field in body["errors"]


def test_a_malformed_batch_item_names_its_index(api, default_pool):
    tokens = ["good_1", "good-2", "good3", "bad token", "ok", "x" * 200]
    body = assert_error(api.post("/api/v1/lookup/batch", {"internal_tokens": tokens}), 400, "invalid_request")
    assert set(body["errors"]) == {"internal_tokens.3", "internal_tokens.5"}
    body = assert_error(api.post("/api/v1/detokenize/batch", {"external_ref_ids": ["ok", 7]}), 400,
                        "invalid_request")
    assert set(body["errors"]) == {"external_ref_ids.1"}


def test_a_batch_over_1000_items_is_400(api, default_pool):
    body = assert_error(api.post("/api/v1/lookup/batch", {"internal_tokens": ["t"] * 1001}), 400, "invalid_request")
    assert "internal_tokens" in body["errors"]


def test_bodies_over_64_kib_are_413(api, default_pool):
    big = json.dumps({"owner_ref": "x", "padding": "p" * (64 * 1024)})
    assert_error(raw_post(api, "/api/v1/reservations", big), 413, "payload_too_large")
    assert not TokenPair.objects.filter(status="RESERVED").exists()
    # a lookup batch of 1,000 long tokens is within the contract's limits but not within 64 KiB
    tokens = ["t" * 128] * 1000
    assert_error(api.post("/api/v1/lookup/batch", {"internal_tokens": tokens}), 413, "payload_too_large")


def test_oversize_bodies_are_refused_even_without_credentials(api_as, default_pool):
    response = raw_post(api_as(None), "/api/v1/lookup", "x" * (65 * 1024))
    assert_error(response, 413, "payload_too_large")


def test_a_body_just_under_the_limit_is_parsed(api, default_pool):
    body = json.dumps({"owner_ref": "ok", "padding": "p" * (60 * 1024)})
    assert raw_post(api, "/api/v1/reservations", body).status_code == 201


def test_unsupported_media_type_is_415(api, default_pool):
    assert_error(raw_post(api, "/api/v1/reservations", "owner_ref=x", "application/x-www-form-urlencoded"),
                 415, "unsupported_media_type")
    assert_error(raw_post(api, "/api/v1/lookup", '{"internal_token": "abc"}', "text/plain"),
                 415, "unsupported_media_type")


def test_a_body_without_content_type_is_415(api, default_pool):
    response = api.client.generic("POST", "/api/v1/reservations", b'{"owner_ref": "x"}', content_type="")
    assert_error(response, 415, "unsupported_media_type")


def test_an_empty_post_without_content_type_is_an_empty_object(api, default_pool):
    response = api.client.generic("POST", "/api/v1/reservations", b"", content_type="")
    assert response.status_code == 201


@pytest.mark.parametrize("method,path", [
    ("GET", "/api/v1/reservations"), ("PUT", "/api/v1/reservations"), ("GET", "/api/v1/lookup"),
    ("GET", "/api/v1/detokenize/batch"), ("DELETE", "/api/v1/reservations/00000000-0000-0000-0000-000000000000"),
    ("POST", "/api/v1/pools/default"), ("GET", "/api/v1/reservations/batch"),
])
def test_wrong_method_is_405(api, default_pool, method, path):
    response = api.client.generic(method, path, b"{}", content_type="application/json")
    assert_error(response, 405, "method_not_allowed")
    assert response.has_header("Allow")


@pytest.mark.parametrize("path", ["/api/v1/nothing-here", "/api/v2/reservations", "/api/", "/api/v1/lookup/"])
def test_unknown_urls_under_api_are_contract_404s(api, path):
    assert_error(api.get(path), 404, "not_found")
    assert_error(api.post(path, {}), 404, "not_found")


def test_pages_outside_api_keep_djangos_errors(api):
    response = api.get("/definitely-not-here")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


def test_unexpected_errors_are_500_without_internals(api, default_pool, monkeypatch):
    from monitoring import api as monitoring_api

    def explode(**kwargs):
        raise RuntimeError("secret internals: password=hunter2")

    monkeypatch.setattr(monitoring_api, "pool_health", explode)
    response = api.get("/api/v1/pools/default")
    body = assert_error(response, 500, "internal_error")
    assert "secret" not in response.content.decode() and "Traceback" not in response.content.decode()
    assert set(body) == {"code", "detail", "correlation_id"}


def test_unexpected_errors_outside_drf_views_are_500_json(api_as, monkeypatch):
    # A failure in non-DRF code under /api/ (here: the schema view) still yields the contract body.
    monkeypatch.setattr("drf_spectacular.views.SpectacularAPIView.get",
                        lambda *a, **k: (_ for _ in ()).throw(ValueError("boom")))
    response = api_as(None).get("/api/schema/")
    assert response.status_code == 500 and response.json()["code"] == "internal_error"
    assert "boom" not in response.content.decode()


# ---- correlation ids -----------------------------------------------------------------------------------

def test_a_well_formed_correlation_id_is_echoed_everywhere(api, default_pool):
    response = api.post("/api/v1/reservations", {}, HTTP_X_CORRELATION_ID="order-77:attempt.1")
    assert response["X-Correlation-ID"] == "order-77:attempt.1"
    error = api.post("/api/v1/reservations", {"pool": "nope"}, HTTP_X_CORRELATION_ID="abc-123")
    assert error["X-Correlation-ID"] == "abc-123" and error.json()["correlation_id"] == "abc-123"


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "semi;colon", ""])
def test_a_malformed_correlation_id_is_replaced(api, default_pool, bad):
    response = api.post("/api/v1/reservations", {"pool": "nope"}, HTTP_X_CORRELATION_ID=bad)
    new = response["X-Correlation-ID"]
    assert new and new != bad and response.json()["correlation_id"] == new


def test_every_response_carries_a_correlation_id(api, api_as):
    for response in (api.get("/api/v1/nowhere"), api_as(None).post("/api/v1/lookup", {}),
                     api.client.get("/healthz")):
        assert response.has_header("X-Correlation-ID")


def test_pathologically_nested_json_is_400_not_500(api, default_pool):
    assert_error(raw_post(api, "/api/v1/lookup", "[" * 20000 + "]" * 20000), 400, "invalid_request")
    body = '{"owner_ref": ' + "[" * 5000 + "]" * 5000 + "}"
    assert_error(raw_post(api, "/api/v1/reservations", body), 400, "invalid_request")
    assert not TokenPair.objects.exclude(status="AVAILABLE").exists()


def chunked(body: str) -> dict:
    """WSGI environ of a chunked request as gunicorn presents it: decoded stream, no length."""
    return {"CONTENT_LENGTH": "", "HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": io.BytesIO(body.encode())}


def test_a_chunked_body_is_read_not_ignored(api, default_pool):
    """gunicorn passes chunked bodies without Content-Length; Django alone would see them empty and
    reserve from "default" although the body names another pool."""
    response = raw_post(api, "/api/v1/reservations", "", **chunked(json.dumps({"pool": "nope"})))
    assert_error(response, 404, "not_found")
    assert not TokenPair.objects.exclude(status="AVAILABLE").exists()
    response = raw_post(api, "/api/v1/reservations", "", **chunked(json.dumps({"owner_ref": "card-7"})))
    assert response.status_code == 201 and response.json()["owner_ref"] == "card-7"


def test_a_chunked_body_over_64_kib_is_413(api, default_pool):
    body = json.dumps({"internal_token": "1" * 16, "pad": "x" * (64 * 1024)})
    assert_error(raw_post(api, "/api/v1/lookup", "", **chunked(body)), 413, "payload_too_large")


@pytest.mark.parametrize("name", ["%00", "a%00b", "x" * 300])
def test_pool_names_that_cannot_exist_are_404(api, default_pool, name):
    assert_error(api.get(f"/api/v1/pools/{name}"), 404, "not_found")
