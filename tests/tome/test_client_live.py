"""TokenizationLibrary against the live TOME emulator over HTTP (fixture ``tome``)."""
from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tokenpool_tome.client import CallRecord, HttpTokenizationLibrary, TokenPair, TomeClientConfig
from tokenpool_tome.correlation import correlation_scope
from tokenpool_tome.errors import CircuitOpenError, NamespaceNotFound, TomeRequestError, TomeUnavailable

EXTERNAL_REF = re.compile(r"^ext_[a-z2-7]{26}$")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def assert_pair_shape(pair: TokenPair) -> None:
    assert re.fullmatch(r"\d{16}", pair.internal_token) and not luhn_valid(pair.internal_token)
    assert EXTERNAL_REF.fullmatch(pair.external_ref_id)


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex}"


def stats_calls(tome: Any) -> dict[str, dict[str, dict[str, int]]]:
    stats = tome.stats()
    return stats.get("calls", stats)


def recent_requests(tome: Any, limit: int) -> list[dict[str, Any]]:
    answer = tome.requests(limit)
    return answer["requests"] if isinstance(answer, dict) else answer


def as_client_counts(calls: dict[str, dict[str, dict[str, int]]]) -> dict[tuple[str, str, str], int]:
    return {(ns, op, outcome): n for ns, ops in calls.items() for op, outcomes in ops.items()
            for outcome, n in outcomes.items() if n}


@pytest.fixture
def live_client(tome) -> Callable[..., HttpTokenizationLibrary]:
    clients: list[HttpTokenizationLibrary] = []

    def make(*, on_call: Callable[[CallRecord], None] | None = None, **overrides: Any) -> HttpTokenizationLibrary:
        options: dict[str, Any] = dict(base_url=tome.base_url, api_token=tome.client_token,
                                       ns1=tome.ns1, ns2=tome.ns2, backoff_initial=0.005,
                                       backoff_max=0.02)
        options.update(overrides)
        client = HttpTokenizationLibrary(TomeClientConfig(**options), on_call=on_call)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


# ---- every method --------------------------------------------------------------------------------

def test_single_item_methods_round_trip_through_both_namespaces(live_client):
    client = live_client()
    value = unique("4111")

    assert client.lookup(value) is None  # nothing yet, and lookup creates nothing
    pair = client.tokenize(value)
    assert_pair_shape(pair)
    assert client.tokenize(value) == pair  # convergent
    assert client.lookup(value) == pair
    assert client.detokenize(pair.external_ref_id) == value
    assert client.detokenize_internal(pair.internal_token) == value
    assert client.external_for(pair.internal_token) == pair.external_ref_id
    assert client.internal_for(pair.external_ref_id) == pair.internal_token


def test_unknown_tokens_and_values_answer_none(live_client):
    client = live_client()

    assert client.lookup(unique("never")) is None
    assert client.detokenize("ext_" + "a" * 26) is None
    assert client.internal_for("ext_" + "b" * 26) is None
    assert client.detokenize_internal("1234567812345678") is None
    assert client.external_for("1234567812345679") is None


def test_batch_methods_keep_request_order_with_nones_for_unknowns(live_client):
    client = live_client()
    values = [unique("v") for _ in range(4)]

    pairs = client.tokenize_batch(values + [values[0]])
    assert pairs[4] == pairs[0] and len(set(pairs[:4])) == 4
    for pair in pairs:
        assert_pair_shape(pair)
    externals = [p.external_ref_id for p in pairs[:4]]
    internals = [p.internal_token for p in pairs[:4]]
    missing_ext = "ext_" + "c" * 26

    assert client.detokenize_batch([externals[2], missing_ext, externals[0]]) == [values[2], None, values[0]]
    assert client.lookup_batch([values[3], unique("nope"), values[1]]) == [pairs[3], None, pairs[1]]
    assert client.internal_for_batch(externals + [missing_ext]) == internals + [None]
    assert client.external_for_batch(list(reversed(internals))) == list(reversed(externals))


def test_generate_pairs_binds_fresh_internal_tokens_to_external_refs(live_client, tome):
    client = live_client()
    tome.reset_stats()

    pairs = client.generate_pairs(25, batch_size=10)

    assert len(set(pairs)) == 25
    for pair in pairs:
        assert_pair_shape(pair)
    assert client.internal_for_batch([p.external_ref_id for p in pairs]) == [p.internal_token for p in pairs]
    # Until real data is tokenized, an internal token stands for an opaque surrogate.
    assert client.detokenize_internal(pairs[0].internal_token).startswith("gen_")
    calls = stats_calls(tome)
    assert calls[tome.ns1]["generate"] == {"ok": 3, "error": 0}
    assert calls[tome.ns2]["tokenize"] == {"ok": 3, "error": 0}


def test_large_batches_are_split_into_max_batch_calls(live_client, tome):
    client = live_client(max_batch=5)
    values = [unique("b") for _ in range(12)]
    tome.reset_stats()

    pairs = client.tokenize_batch(values)

    assert client.detokenize_batch([p.external_ref_id for p in pairs]) == values
    ns1_tokenize = [r["items"] for r in reversed(recent_requests(tome, 50))
                    if r["namespace"] == tome.ns1 and r["operation"] == "tokenize"]
    assert ns1_tokenize == [5, 5, 2]
    assert stats_calls(tome)[tome.ns2]["detokenize"]["ok"] == 3


def test_ping_and_close(live_client, tome):
    client = live_client()
    tome.reset_stats()

    assert client.ping() is True
    assert client.call_counts == {}
    assert as_client_counts(stats_calls(tome)) == {}
    client.close()


# ---- retries --------------------------------------------------------------------------------------

def test_a_failed_first_attempt_is_retried_and_succeeds(live_client, tome):
    tome.set_faults(error_rate=1.0, error_status=503)
    records: list[CallRecord] = []

    def heal_after_first_error(record: CallRecord) -> None:
        records.append(record)
        if record.outcome == "error":
            tome.reset_faults()

    client = live_client(on_call=heal_after_first_error, max_attempts=3)
    pair = client.tokenize(unique("retry"))

    assert_pair_shape(pair)
    assert [(r.namespace, r.attempt, r.outcome, r.status_code) for r in records] == [
        (tome.ns1, 1, "error", 503), (tome.ns1, 2, "ok", 200), (tome.ns2, 1, "ok", 200)]


def test_retries_ride_out_a_50_percent_error_rate(live_client, tome):
    tome.set_faults(error_rate=0.5, error_status=500)
    client = live_client(max_attempts=25, breaker_failure_threshold=100)
    values = [unique("flaky") for _ in range(12)]  # 24 logical calls: some attempt fails

    pairs = [client.tokenize(v) for v in values]
    tome.reset_faults()

    assert [client.detokenize(p.external_ref_id) for p in pairs] == values
    counts = client.call_counts
    assert counts[(tome.ns1, "tokenize", "error")] + counts[(tome.ns2, "tokenize", "error")] > 0


def test_a_timed_out_attempt_is_retried(live_client, tome):
    tome.set_faults(timeout_rate=1.0, timeout_seconds=2.0)
    records: list[CallRecord] = []

    def heal_after_first_error(record: CallRecord) -> None:
        records.append(record)
        if record.outcome == "error":
            tome.reset_faults()

    client = live_client(on_call=heal_after_first_error, read_timeout=0.2, max_attempts=3)
    started = time.monotonic()
    pairs = client.generate_pairs(3)

    assert len(set(pairs)) == 3
    assert (records[0].operation, records[0].outcome, records[0].status_code, records[0].error) == (
        "generate", "error", None, "ReadTimeout")
    assert (records[1].operation, records[1].attempt, records[1].outcome) == ("generate", 2, "ok")
    assert time.monotonic() - started < 1.5  # gave up on the slow answer, did not wait for it
    assert client.internal_for_batch([p.external_ref_id for p in pairs]) == [p.internal_token for p in pairs]


def test_timeouts_exhaust_attempts_into_tome_unavailable(live_client, tome):
    tome.set_faults(timeout_rate=1.0, timeout_seconds=1.0)
    client = live_client(read_timeout=0.1, max_attempts=2)

    with pytest.raises(TomeUnavailable) as info:
        client.lookup(unique("slow"))

    assert info.value.attempts == 2
    assert client.call_counts == {(tome.ns1, "lookup", "error"): 2}


def test_client_errors_are_not_retried(live_client, tome):
    tome.reset_stats()
    unknown_ns = live_client(ns1="nosuchns", max_attempts=5)
    bad_token = live_client(api_token="not-a-valid-token", max_attempts=5)

    with pytest.raises(NamespaceNotFound):
        unknown_ns.tokenize(unique("x"))
    with pytest.raises(TomeRequestError) as info:
        bad_token.lookup(unique("x"))

    assert info.value.status == 401 and info.value.code == "unauthorized"
    calls = stats_calls(tome)
    assert calls["nosuchns"]["tokenize"] == {"ok": 0, "error": 1}
    assert calls[tome.ns1]["lookup"] == {"ok": 0, "error": 1}
    assert unknown_ns.breaker_state == bad_token.breaker_state == "closed"


def test_batches_over_the_server_limit_are_rejected_without_retry(live_client, tome):
    server_limit = getattr(tome, "max_batch", 5000)
    client = live_client(max_batch=server_limit + 1, max_attempts=5)

    with pytest.raises(TomeRequestError) as info:
        client.lookup_batch([f"v{i}" for i in range(server_limit + 1)])

    assert (info.value.status, info.value.code) == (400, "batch_too_large")
    assert client.call_counts == {(tome.ns1, "lookup", "error"): 1}


# ---- circuit breaker ------------------------------------------------------------------------------

def test_circuit_opens_during_an_outage_and_closes_after_it(live_client, tome):
    client = live_client(max_attempts=2, breaker_failure_threshold=2, breaker_reset_seconds=0.5)
    tome.set_faults(outage=True)

    for _ in range(2):
        with pytest.raises(TomeUnavailable) as info:
            client.lookup(unique("down"))
        assert info.value.status_code == 503
    assert client.breaker_state == "open"
    assert client.ping() is False

    tome.reset_stats()
    started = time.monotonic()
    with pytest.raises(CircuitOpenError) as info:
        client.tokenize(unique("down"))
    assert time.monotonic() - started < 0.2
    assert 0 < info.value.retry_after <= 0.5
    assert as_client_counts(stats_calls(tome)) == {}, "fail-fast must not reach TOME"

    tome.reset_faults()
    assert client.ping() is True
    time.sleep(0.55)
    assert client.breaker_state == "half_open"
    assert_pair_shape(client.tokenize(unique("back")))
    assert client.breaker_state == "closed"


# ---- correlation and counters ------------------------------------------------------------------------

def test_the_correlation_id_arrives_at_tome(live_client, tome):
    client = live_client()
    correlation_id = f"corr-{uuid.uuid4().hex[:12]}"

    with correlation_scope(correlation_id):
        client.tokenize(unique("corr"))

    latest = recent_requests(tome, 2)
    assert {(r["namespace"], r["operation"], r["correlation_id"]) for r in latest} == {
        (tome.ns1, "tokenize", correlation_id), (tome.ns2, "tokenize", correlation_id)}


def test_client_call_counts_match_the_emulator_counters(live_client, tome):
    tome.set_faults(error_rate=0.3, error_status=503)
    tome.reset_stats()
    client = live_client(max_attempts=25, breaker_failure_threshold=100)
    values = [unique("count") for _ in range(3)]

    pairs = client.tokenize_batch(values)
    client.lookup_batch(values)
    client.detokenize_batch([p.external_ref_id for p in pairs])
    client.external_for(pairs[0].internal_token)
    client.generate_pairs(4, batch_size=2)
    tome.reset_faults()

    counts = client.call_counts
    assert counts == as_client_counts(stats_calls(tome))
    assert sum(counts.values()) >= 10  # at least one HTTP call per logical call


def test_the_django_singleton_follows_the_tome_settings_and_signals_each_call(tome):
    from tome.provider import get_tome_client, tome_call

    received: list[CallRecord] = []

    def receiver(sender: object, record: CallRecord, **kwargs: object) -> None:
        received.append(record)

    tome_call.connect(receiver)
    try:
        client = get_tome_client()
        pair = client.tokenize(unique("django"))
    finally:
        tome_call.disconnect(receiver)

    assert client.config.base_url == tome.base_url and client is get_tome_client()
    assert_pair_shape(pair)
    assert [(r.namespace, r.operation, r.outcome) for r in received] == [
        (tome.ns1, "tokenize", "ok"), (tome.ns2, "tokenize", "ok")]
