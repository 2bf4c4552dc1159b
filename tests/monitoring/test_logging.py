"""Structured logs: one JSON line per request and per TOME call, and never a raw token, key or
Authorization header in any line the process writes."""
from __future__ import annotations

import json
import logging
import secrets
import sys

import httpx
import pytest

from monitoring.logging import JsonFormatter, redact_text
from pool.models import TokenPair
from tokenpool_tome.client import HttpTokenizationLibrary, TomeClientConfig
from tokenpool_tome.correlation import correlation_scope


def _lines(stream) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.mark.django_db
def test_requests_carrying_keys_and_tokens_leave_none_in_the_logs(make_pool, pair_states, make_api_key,
                                                                  api_as, log_capture, client):
    pool = make_pool("default", pairs=5)
    pair_states(pool, used=2)
    used = list(TokenPair.objects.filter(pool=pool, status="USED"))
    _key, raw_key = make_api_key(name="billing-service")
    caller = api_as(raw_key)
    secrets_seen = {raw_key, raw_key.split(".")[1]}

    r1 = caller.post("/api/v1/lookup", {"internal_token": used[0].internal_token},
                     HTTP_X_CORRELATION_ID="corr-lookup-1")
    r2 = caller.post("/api/v1/detokenize", {"external_ref_id": used[1].external_ref_id})
    r3 = caller.post("/api/v1/lookup/batch", {"internal_tokens": [p.internal_token for p in used]})
    r4 = caller.get(f"/api/v1/reservations/{used[0].external_ref_id}")  # a token in a URL path → 404
    r5 = caller.post("/api/v1/reservations", {"owner_ref": "card-123"})
    bad_key = "AbCdEfGh." + secrets.token_hex(16)
    r6 = client.post("/api/v1/lookup", {"internal_token": used[0].internal_token}, content_type="application/json",
                     HTTP_AUTHORIZATION=f"Api-Key {bad_key}")
    assert [r.status_code for r in (r1, r2, r3, r4, r5, r6)] == [200, 200, 200, 404, 201, 401]
    reserved = r5.json()
    secrets_seen |= {bad_key, reserved["internal_token"], reserved["external_ref_id"]}
    secrets_seen |= {p.internal_token for p in used} | {p.external_ref_id for p in used}

    output = log_capture.getvalue()
    assert output, "the requests were logged"
    for secret in secrets_seen:
        assert secret not in output
    assert "Api-Key " + raw_key[:8] not in output

    requests = [line for line in _lines(log_capture) if line["logger"] == "tokenpool.request"]
    assert len(requests) == 6
    first = requests[0]
    assert first["correlation_id"] == "corr-lookup-1"
    assert first["api_key_name"] == "billing-service"
    assert (first["endpoint"], first["method"], first["status"]) == ("/api/v1/lookup", "POST", 200)
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] >= 0
    assert requests[3]["endpoint"] == "/api/v1/reservations/<str:reservation_id>"
    assert requests[5]["status"] == 401 and requests[5]["api_key_name"] is None
    # Django's own 4xx lines carry the request's correlation id too, and only method + path.
    django_lines = [line for line in _lines(log_capture) if line["logger"] == "django.request"]
    assert django_lines and all(line["correlation_id"] for line in django_lines)
    assert any(line["request"].startswith("GET /api/v1/reservations/") for line in django_lines)


def test_one_json_line_per_tome_attempt_with_correlation_id_and_no_values(log_capture):
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(503, json={"error": {"code": "unavailable", "message": "busy"}})
        body = json.loads(request.content)
        return httpx.Response(200, json={"tokens": [f"ext_{v[-6:]}zzzzzz" for v in body["values"]]})

    seen = []
    tome = HttpTokenizationLibrary(
        TomeClientConfig(base_url="http://tome.test", api_token="tome-bearer-secret", backoff_initial=0, backoff_max=0),
        transport=httpx.MockTransport(handler), on_call=seen.append)
    value = "4111111111111111"
    with correlation_scope("corr-tome-7"):
        tome.external_for(value)
    lines = [line for line in _lines(log_capture)
             if line["logger"] == "tokenpool.tome" and line["event"] == "tome_call"]
    assert len(lines) == 2 == len(seen)  # the retry is its own line
    assert [line["outcome"] for line in lines] == ["error", "ok"]
    assert all(line["correlation_id"] == "corr-tome-7" and line["namespace"] == "ns2" for line in lines)
    output = log_capture.getvalue()
    assert value not in output and "tome-bearer-secret" not in output


def test_formatter_redacts_fields_free_text_and_exceptions():
    formatter = JsonFormatter()
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "auth header was %s",
                               ("Api-Key AbCdEfGh.0123456789abcdef0123456789abcdef",), None)
    record.internal_token = "9123456789012345"
    record.payload = {"external_ref_id": "ext_abcdefghijklmnopqrstuvwxyz", "nested": {"authorization": "Bearer t0k"}}
    try:
        raise ValueError('duplicate key value violates unique constraint "x"\n'
                         'DETAIL:  Key (internal_token)=(9876543210987654) already exists.')
    except ValueError:
        record.exc_info = sys.exc_info()
    line = json.loads(formatter.format(record))
    text = json.dumps(line)
    for secret in ("0123456789abcdef0123456789abcdef", "9123456789012345", "ext_abcdefghijklmnopqrstuvwxyz",
                   "t0k", "9876543210987654"):
        assert secret not in text
    assert line["internal_token"] == "[redacted]"
    assert line["exc_type"] == "ValueError"
    assert "Key (internal_token)=([redacted]) already exists" in line["exc_message"]
    assert line["exc_stack"]
    assert line["exc_stack"][-1].endswith("test_formatter_redacts_fields_free_text_and_exceptions")


@pytest.mark.parametrize(("text", "expected"), [
    ("Authorization: Bearer abc.def", "Authorization: Bearer [redacted]"),
    ("key AbCdEfGh.0123456789abcdef0123456789abcdef used", "key [redacted] used"),
    ("Not Found: /api/v1/reservations/ext_3kqabcdefghij", "Not Found: /api/v1/reservations/[redacted]"),
    ("pool default has 1200 pairs", "pool default has 1200 pairs"),
    ("DETAIL:  Failing row contains (7, abc-token, RESERVED, null).", "DETAIL:  Failing row contains ([redacted])."),
])
def test_redact_text(text, expected):
    assert redact_text(text) == expected
