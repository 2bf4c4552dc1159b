"""The TOME emulator over real HTTP: the behaviour docs/tome-api.md promises."""
from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from devtools.tome_emulator.tokens import luhn_valid, numeric16_tokens
from tests.fixtures.processes import free_port, wait_for
from tests.fixtures.tome import ROOT, TomeEmulatorProcess

NS2_TOKEN = re.compile(r"^ext_[a-z2-7]{26}$")
GENERATED_VALUE = re.compile(r"^gen_[0-9a-f]{32}$")


@pytest.fixture
def http(tome: TomeEmulatorProcess):
    with tome.client() as client:
        yield client


def post(http: httpx.Client, ns: str, operation: str, body: object, **kwargs) -> httpx.Response:
    return http.post(f"/v1/namespaces/{ns}/{operation}", json=body, **kwargs)


def new_values(n: int) -> list[str]:
    return [f"value-{secrets.token_hex(8)}" for _ in range(n)]


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


# --- operations ---------------------------------------------------------------------------------
def test_generate_issues_exactly_count_fresh_tokens_bound_to_surrogates(http, tome):
    tokens = post(http, tome.ns1, "generate", {"count": 50}).json()["tokens"]
    assert len(tokens) == len(set(tokens)) == 50
    values = post(http, tome.ns1, "detokenize", {"tokens": tokens}).json()["values"]
    assert all(GENERATED_VALUE.match(v) for v in values)
    assert len(set(values)) == 50


def test_tokenize_converges_across_calls_and_within_one_batch(http, tome):
    a, b = new_values(2)
    first = post(http, tome.ns1, "tokenize", {"values": [a, b, a]}).json()["tokens"]
    assert first[0] == first[2] != first[1]
    again = post(http, tome.ns1, "tokenize", {"values": [b, a]}).json()["tokens"]
    assert again == [first[1], first[0]]


def test_tokenize_converges_under_concurrent_identical_batches(tome):
    values = new_values(2000)

    def tokenize(seed: int) -> dict[str, str]:
        batch = values[seed:] + values[:seed]  # same values, different order per caller
        with tome.client() as client:
            tokens = post(client, tome.ns1, "tokenize", {"values": batch}).raise_for_status().json()["tokens"]
        return dict(zip(batch, tokens, strict=True))

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(tokenize, [0, 250, 500, 750, 1000, 1250, 1500, 1750]))
    assert all(result == results[0] for result in results)
    assert len(set(results[0].values())) == 2000


def test_detokenize_returns_values_in_order_and_null_for_unknown_tokens(http, tome):
    values = new_values(3)
    tokens = post(http, tome.ns1, "tokenize", {"values": values}).json()["tokens"]
    unknown = "1234567890123456"
    response = post(http, tome.ns1, "detokenize", {"tokens": [tokens[2], unknown, tokens[0], tokens[2]]})
    assert response.status_code == 200
    assert response.json() == {"values": [values[2], None, values[0], values[2]]}


def test_lookup_finds_tokenized_values_and_creates_nothing(http, tome):
    known, never = new_values(2)
    token = post(http, tome.ns1, "tokenize", {"values": [known]}).json()["tokens"][0]
    assert post(http, tome.ns1, "lookup", {"values": [never, known]}).json() == {"tokens": [None, token]}
    # Still unknown after the lookup: lookup must not have minted anything.
    assert post(http, tome.ns1, "lookup", {"values": [never]}).json() == {"tokens": [None]}


def test_namespaces_are_independent_and_ns2_tokenizes_internal_tokens(http, tome):
    value = new_values(1)[0]
    internal = post(http, tome.ns1, "tokenize", {"values": [value]}).json()["tokens"][0]
    external = post(http, tome.ns2, "tokenize", {"values": [internal]}).json()["tokens"][0]
    assert NS2_TOKEN.match(external)
    assert post(http, tome.ns2, "detokenize", {"tokens": [external]}).json()["values"] == [internal]
    assert post(http, tome.ns1, "detokenize", {"tokens": [internal]}).json()["values"] == [value]
    # The same value in the other namespace is a different mapping.
    assert post(http, tome.ns2, "lookup", {"values": [value]}).json()["tokens"] == [None]


# --- token formats and uniqueness -----------------------------------------------------------------
def test_100k_generated_ns1_tokens_are_unique_16_digit_and_fail_luhn(tome):
    def generate(_: int) -> list[str]:
        with tome.client() as client:
            return post(client, tome.ns1, "generate", {"count": 5000}).raise_for_status().json()["tokens"]

    with ThreadPoolExecutor(max_workers=2) as pool:
        tokens = [t for batch in pool.map(generate, range(20)) for t in batch]
    assert len(tokens) == 100_000
    assert len(set(tokens)) == 100_000
    assert all(len(t) == 16 and t.isdigit() for t in tokens)
    assert not any(luhn_valid(t) for t in tokens)


def test_tokenized_ns1_tokens_fail_luhn_too(http, tome):
    tokens = post(http, tome.ns1, "tokenize", {"values": new_values(5000)}).json()["tokens"]
    assert len(set(tokens)) == 5000
    assert all(len(t) == 16 and t.isdigit() and not luhn_valid(t) for t in tokens)


def test_ns2_tokens_are_ext_prefix_and_26_lower_case_base32_chars(http, tome):
    generated = post(http, tome.ns2, "generate", {"count": 500}).json()["tokens"]
    tokenized = post(http, tome.ns2, "tokenize", {"values": new_values(500)}).json()["tokens"]
    assert all(NS2_TOKEN.match(t) for t in generated + tokenized)
    assert len(set(generated + tokenized)) == 1000


def test_luhn_helper_agrees_with_known_numbers():
    assert luhn_valid("4111111111111111") and luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112")
    assert not any(luhn_valid(t) for t in numeric16_tokens(10_000))


# --- errors ------------------------------------------------------------------------------------------
def test_unknown_namespace_is_404_namespace_not_found(http):
    response = post(http, "no-such-ns", "tokenize", {"values": ["x"]})
    assert response.status_code == 404
    assert error_code(response) == "namespace_not_found"


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic dGVzdA==", "Bearer test-tome-admin"])
def test_operations_need_a_known_client_token(tome, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.post(f"{tome.base_url}/v1/namespaces/{tome.ns1}/tokenize", json={"values": ["x"]},
                          headers=headers)
    assert response.status_code == 401
    assert error_code(response) == "unauthorized"


def test_admin_endpoints_need_the_admin_token(http, tome):
    assert http.get("/v1/admin/stats").status_code == 401  # client token is not enough
    assert httpx.put(f"{tome.base_url}/v1/admin/faults", json={"outage": True}).status_code == 401
    assert tome.faults()["outage"] is False


def test_batches_over_the_limit_are_400_batch_too_large(http, tome):
    too_many = post(http, tome.ns1, "tokenize", {"values": ["v"] * 5001})
    assert too_many.status_code == 400 and error_code(too_many) == "batch_too_large"
    too_many = post(http, tome.ns1, "generate", {"count": 5001})
    assert too_many.status_code == 400 and error_code(too_many) == "batch_too_large"
    assert post(http, tome.ns1, "lookup", {"values": ["v"] * 5000}).status_code == 200


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("tokenize", {"values": []}),
        ("tokenize", {"values": "abc"}),
        ("tokenize", {"values": ["ok", 7]}),
        ("tokenize", {"values": [""]}),
        ("tokenize", {"values": ["x" * 1025]}),
        ("tokenize", {"values": ["nul\u0000byte"]}),
        ("tokenize", ["not", "an", "object"]),
        ("detokenize", {"values": ["wrong key"]}),
        ("lookup", {}),
        ("generate", {"count": 0}),
        ("generate", {"count": "5"}),
        ("generate", {"count": True}),
    ],
)
def test_malformed_bodies_are_400_invalid_request(http, tome, operation, body):
    response = post(http, tome.ns1, operation, body)
    assert response.status_code == 400
    assert error_code(response) == "invalid_request"


def test_bad_json_is_400_invalid_request(http, tome):
    response = http.post(f"/v1/namespaces/{tome.ns1}/tokenize", content=b"{not json",
                         headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and error_code(response) == "invalid_request"
    lone_surrogate = http.post(f"/v1/namespaces/{tome.ns1}/tokenize", content=b'{"values": ["\\ud800"]}')
    assert lone_surrogate.status_code == 400 and error_code(lone_surrogate) == "invalid_request"


def test_unknown_routes_are_404_and_wrong_methods_405(http, tome):
    assert error_code(http.get("/v2/anything")) == "not_found"
    assert http.post(f"/v1/namespaces/{tome.ns1}/explode", json={}).status_code == 404
    wrong = http.get(f"/v1/namespaces/{tome.ns1}/tokenize")
    assert wrong.status_code == 405 and error_code(wrong) == "method_not_allowed"
    assert wrong.headers["Allow"] == "POST"


# --- persistence and idempotency -------------------------------------------------------------------
def test_mappings_survive_a_restart(tome):
    value = new_values(1)[0]
    with tome.client() as client:
        token = post(client, tome.ns1, "tokenize", {"values": [value]}).json()["tokens"][0]
        generated = post(client, tome.ns2, "generate", {"count": 3}).json()["tokens"]
    old_pid = tome.pid
    tome.restart()
    assert tome.pid != old_pid
    with tome.client() as client:
        assert post(client, tome.ns1, "detokenize", {"tokens": [token]}).json()["values"] == [value]
        assert post(client, tome.ns1, "tokenize", {"values": [value]}).json()["tokens"] == [token]
        surrogates = post(client, tome.ns2, "detokenize", {"tokens": generated}).json()["values"]
    assert all(GENERATED_VALUE.match(v) for v in surrogates)


def test_generate_with_the_same_idempotency_key_returns_the_same_tokens(http, tome):
    key = {"Idempotency-Key": f"refill-{secrets.token_hex(8)}"}
    first = post(http, tome.ns1, "generate", {"count": 10}, headers=key).json()["tokens"]
    retried = post(http, tome.ns1, "generate", {"count": 10}, headers=key).json()["tokens"]
    assert retried == first
    other_count = post(http, tome.ns1, "generate", {"count": 11}, headers=key)
    assert other_count.status_code == 400 and error_code(other_count) == "invalid_request"
    fresh = post(http, tome.ns1, "generate", {"count": 10},
                 headers={"Idempotency-Key": f"refill-{secrets.token_hex(8)}"}).json()["tokens"]
    assert not set(fresh) & set(first)
    # Scoped per namespace: the same key in NS2 mints NS2 tokens.
    assert all(NS2_TOKEN.match(t) for t in post(http, tome.ns2, "generate", {"count": 2}, headers=key).json()["tokens"])


def test_concurrent_retries_with_one_idempotency_key_get_one_set_of_tokens(tome):
    key = {"Idempotency-Key": f"race-{secrets.token_hex(8)}"}

    def generate(_: int) -> list[str]:
        with tome.client() as client:
            return post(client, tome.ns1, "generate", {"count": 1000}, headers=key).raise_for_status().json()["tokens"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(generate, range(4)))
    assert all(result == results[0] for result in results)


def test_namespace_flags_parse_into_name_format_prefix():
    from devtools.tome_emulator.cli import parse_namespace

    assert parse_namespace("ns1:numeric16") == ("ns1", "numeric16", "")
    assert parse_namespace("ns2:prefixed") == ("ns2", "prefixed", "ext_")
    assert parse_namespace("ref:prefixed:ref_") == ("ref", "prefixed", "ref_")
    for bad in ("ns1", "ns1:luhn", "ns1:numeric16:x"):
        with pytest.raises(ValueError):
            parse_namespace(bad)


def test_idempotency_key_longer_than_255_chars_is_rejected(http, tome):
    response = post(http, tome.ns1, "generate", {"count": 1}, headers={"Idempotency-Key": "k" * 256})
    assert response.status_code == 400 and error_code(response) == "invalid_request"


# --- fault injection ----------------------------------------------------------------------------------
def test_error_rate_one_answers_503_unavailable_with_retry_after(http, tome):
    tome.set_faults(error_rate=1.0)
    response = post(http, tome.ns1, "tokenize", {"values": ["x"]})
    assert response.status_code == 503
    assert error_code(response) == "unavailable"
    assert response.headers["Retry-After"] == "1"
    tome.set_faults(error_status=500)
    assert error_code(post(http, tome.ns1, "lookup", {"values": ["x"]})) == "internal_error"
    tome.set_faults(error_rate=0.0)
    assert post(http, tome.ns1, "lookup", {"values": ["x"]}).status_code == 200


def test_latency_is_at_least_the_configured_delay(http, tome):
    tome.set_faults(latency_ms=150, jitter_ms=50)
    started = time.perf_counter()
    assert post(http, tome.ns1, "lookup", {"values": ["x"]}).status_code == 200
    assert time.perf_counter() - started >= 0.150
    # Admin endpoints are never slowed down: a delay far beyond any stall of a loaded machine.
    tome.set_faults(latency_ms=10_000, jitter_ms=0)
    started = time.perf_counter()
    tome.stats()
    assert time.perf_counter() - started < 10.0


def test_outage_fails_every_operation_and_healthz_but_not_admin(http, tome):
    tome.set_faults(outage=True)
    response = post(http, tome.ns1, "tokenize", {"values": ["x"]})
    assert response.status_code == 503 and error_code(response) == "unavailable"
    assert http.get("/healthz").status_code == 503
    assert tome.stats()[tome.ns1]["tokenize"] == {"ok": 0, "error": 1}
    tome.set_faults(outage=False)
    assert http.get("/healthz").json() == {"status": "ok"}


def test_timeout_holds_the_answer_after_doing_the_work(tome):
    tome.set_faults(timeout_rate=1.0, timeout_seconds=1.0)
    value = new_values(1)[0]
    with tome.client(timeout=0.3) as client, pytest.raises(httpx.ReadTimeout):
        post(client, tome.ns1, "tokenize", {"values": [value]})
    tome.reset_faults()
    with tome.client() as client:  # the work happened: a retry converges on the same mapping
        assert post(client, tome.ns1, "lookup", {"values": [value]}).json()["tokens"][0] is not None
    held = [entry for entry in tome.requests() if entry["operation"] == "tokenize"]
    assert held[0]["fault"] == "timeout" and held[0]["status"] == 200


def test_invalid_fault_settings_are_rejected(tome):
    for bad in ({"error_rate": 2}, {"outage": "yes"}, {"error_status": 418}, {"latency": 5}):
        assert tome.admin.put("/v1/admin/faults", json=bad).status_code == 400
    assert tome.faults()["error_rate"] == 0.0


# --- observability ------------------------------------------------------------------------------------
def test_calls_are_counted_per_namespace_operation_and_outcome(http, tome):
    post(http, tome.ns1, "tokenize", {"values": ["a"]})
    post(http, tome.ns1, "tokenize", {"values": ["b"]})
    post(http, tome.ns2, "lookup", {"values": ["a"]})
    post(http, tome.ns1, "generate", {"count": 0})
    assert tome.stats() == {
        tome.ns1: {"tokenize": {"ok": 2, "error": 0}, "generate": {"ok": 0, "error": 1}},
        tome.ns2: {"lookup": {"ok": 1, "error": 0}},
    }
    tome.reset_stats()
    assert tome.stats() == {}


def test_correlation_id_is_echoed_and_recorded_without_values(http, tome):
    response = post(http, tome.ns1, "tokenize", {"values": ["secret-value-1", "secret-value-2"]},
                    headers={"X-Correlation-ID": "corr-123"})
    assert response.headers["X-Correlation-ID"] == "corr-123"
    [entry] = tome.requests(limit=1)
    assert entry["correlation_id"] == "corr-123"
    assert (entry["namespace"], entry["operation"], entry["status"], entry["items"]) == (
        tome.ns1, "tokenize", 200, 2)
    assert "secret-value" not in str(entry) and response.json()["tokens"][0] not in str(entry)
    generated = post(http, tome.ns1, "lookup", {"values": ["x"]}).headers["X-Correlation-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)


def test_request_log_lines_carry_no_values_or_tokens(http, tome):
    value = f"log-probe-{secrets.token_hex(6)}"
    token = post(http, tome.ns1, "tokenize", {"values": [value]}).json()["tokens"][0]
    post(http, tome.ns1, "detokenize", {"tokens": [token]})
    log = tome.log_path.read_text()
    assert '"operation": "detokenize"' in log
    assert value not in log and token not in log


# --- administration -----------------------------------------------------------------------------------
def test_namespace_put_is_idempotent_and_conflicts_on_another_format(tome):
    name = f"ns-{secrets.token_hex(4)}"
    created = tome.admin.put(f"/v1/admin/namespaces/{name}", json={"format": "prefixed", "prefix": "ref_"})
    assert created.status_code == 201 and created.json()["prefix"] == "ref_"
    assert tome.admin.put(f"/v1/admin/namespaces/{name}",
                          json={"format": "prefixed", "prefix": "ref_"}).status_code == 200
    conflict = tome.admin.put(f"/v1/admin/namespaces/{name}", json={"format": "numeric16"})
    assert conflict.status_code == 409 and error_code(conflict) == "namespace_conflict"
    listed = tome.admin.get("/v1/admin/namespaces").json()["namespaces"]
    assert {n["name"] for n in listed} >= {tome.ns1, tome.ns2, name}
    assert all(set(n) == {"name", "format", "prefix", "created_at"} for n in listed)  # never keys
    with tome.client() as client:
        token = post(client, name, "tokenize", {"values": ["v"]}).json()["tokens"][0]
    assert re.fullmatch(r"ref_[a-z2-7]{26}", token)


def test_management_command_serves_and_stops_cleanly_on_sigterm(tome_emulator):
    port = free_port()
    env = dict(os.environ, TOME_EMULATOR_DATABASE_URL=tome_emulator.database_url, PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "manage.py", "tome_emulator", "--port", str(port)],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    def healthy() -> bool:
        assert process.poll() is None, process.stderr.read().decode(errors="replace")[-2000:]
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, timeout=30, message="the emulator command to answer /healthz")
        response = httpx.post(f"http://127.0.0.1:{port}/v1/namespaces/ns1/lookup", json={"values": ["x"]},
                              headers={"Authorization": "Bearer dev-tome-token"})
        assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
