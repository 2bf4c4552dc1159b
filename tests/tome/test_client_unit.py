"""TokenizationLibrary unit tests over httpx.MockTransport: no network, no database."""
from __future__ import annotations

import inspect
import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from monitoring.logging import JsonFormatter
from tokenpool_tome.client import (
    CallRecord,
    HttpTokenizationLibrary,
    TokenizationLibrary,
    TokenPair,
    TomeClientConfig,
)
from tokenpool_tome.correlation import correlation_scope
from tokenpool_tome.errors import (
    CircuitOpenError,
    NamespaceNotFound,
    TomeError,
    TomeRequestError,
    TomeResponseError,
    TomeUnavailable,
)

BEARER = "s3cret-bearer-token-xyz"
PAN = "4111111111111111"


@dataclass
class Seen:
    namespace: str
    operation: str
    body: dict[str, Any]
    headers: httpx.Headers


@dataclass
class FakeTome:
    """An in-memory TOME: convergent tokenize, detokenize, lookup, generate; scripted faults.

    ``faults`` is consumed one entry per namespace call before the real answer: an int is an
    error status, an exception instance is raised, a callable gets the request and returns a
    response.
    """

    faults: list[Any] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    vault: dict[str, dict[str, str]] = field(default_factory=dict)  # ns -> value -> token
    counter: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/healthz":
            return httpx.Response(200, json={"status": "ok"})
        _, _, _, namespace, operation = request.url.path.split("/")
        body = json.loads(request.content)
        with self.lock:
            self.seen.append(Seen(namespace, operation, body, request.headers))
            fault = self.faults.pop(0) if self.faults else None
        if isinstance(fault, Exception):
            raise fault
        if isinstance(fault, int):
            code = {400: "invalid_request", 401: "unauthorized", 404: "namespace_not_found",
                    429: "rate_limited", 500: "internal_error", 503: "unavailable"}[fault]
            headers = {"Retry-After": "1"} if fault in (429, 503) else {}
            return httpx.Response(fault, json={"error": {"code": code, "message": "injected"}},
                                  headers=headers)
        if callable(fault):
            return fault(request)
        return httpx.Response(200, json=self.answer(namespace, operation, body))

    def token_for(self, namespace: str, value: str) -> str:
        with self.lock:
            mapping = self.vault.setdefault(namespace, {})
            if value not in mapping:
                self.counter += 1
                mapping[value] = f"{namespace}-tok-{self.counter}"
            return mapping[value]

    def answer(self, namespace: str, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        mapping = self.vault.setdefault(namespace, {})
        if operation == "tokenize":
            return {"tokens": [self.token_for(namespace, v) for v in body["values"]]}
        if operation == "lookup":
            return {"tokens": [mapping.get(v) for v in body["values"]]}
        if operation == "detokenize":
            reverse = {t: v for v, t in mapping.items()}
            return {"values": [reverse.get(t) for t in body["tokens"]]}
        if operation == "generate":
            return {"tokens": [self.token_for(namespace, f"gen_{uuid.uuid4().hex}")
                               for _ in range(body["count"])]}
        raise AssertionError(operation)

    def calls(self, namespace: str | None = None, operation: str | None = None) -> list[Seen]:
        return [s for s in self.seen if (namespace is None or s.namespace == namespace)
                and (operation is None or s.operation == operation)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> FakeTome:
    return FakeTome()


@pytest.fixture
def make_client(fake: FakeTome) -> Callable[..., HttpTokenizationLibrary]:
    clients: list[HttpTokenizationLibrary] = []

    def make(*, provider: Callable[[], str | None] | None = None,
             on_call: Callable[[CallRecord], None] | None = None, sleeps: list[float] | None = None,
             clock: FakeClock | None = None, handler: Callable | None = None,
             **overrides: Any) -> HttpTokenizationLibrary:
        options = dict(base_url="http://tome.test", api_token=BEARER, max_attempts=3,
                       backoff_initial=0.01, backoff_max=0.5)
        options.update(overrides)
        extra: dict[str, Any] = {}
        if provider is not None:
            extra["correlation_id_provider"] = provider
        if clock is not None:
            extra["clock"] = clock
        client = HttpTokenizationLibrary(
            TomeClientConfig(**options), transport=httpx.MockTransport(handler or fake.handler),
            on_call=on_call, sleep=(sleeps.append if sleeps is not None else lambda _s: None),
            **extra)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


# ---- the interface ---------------------------------------------------------------------------

# HttpTokenizationLibrary subclasses the Protocol, so isinstance() alone proves nothing about it: each
# method must be its own implementation, with the Protocol's parameters, defaults and types.
PROTOCOL_METHODS = sorted(name for name, member in vars(TokenizationLibrary).items()
                          if inspect.isfunction(member) and not name.startswith("_"))


def test_the_protocol_lists_the_whole_interface():
    assert {"tokenize", "tokenize_batch", "detokenize", "detokenize_batch", "lookup", "lookup_batch",
            "generate_pairs", "ping", "close"} <= set(PROTOCOL_METHODS)


@pytest.mark.parametrize("name", PROTOCOL_METHODS)
def test_http_library_implements_each_method_with_the_protocol_signature(name):
    implementation = getattr(HttpTokenizationLibrary, name)
    assert implementation is not getattr(TokenizationLibrary, name), f"{name} is only the Protocol's stub"
    assert (inspect.signature(implementation, eval_str=True)
            == inspect.signature(getattr(TokenizationLibrary, name), eval_str=True))


def test_an_object_missing_a_protocol_method_is_not_a_tokenization_library(make_client):
    class NoPing:
        pass

    for name in PROTOCOL_METHODS:
        if name != "ping":
            setattr(NoPing, name, getattr(HttpTokenizationLibrary, name))
    assert not isinstance(NoPing(), TokenizationLibrary)
    NoPing.ping = HttpTokenizationLibrary.ping
    assert isinstance(NoPing(), TokenizationLibrary)
    assert isinstance(make_client(), TokenizationLibrary)


def test_tokenize_chains_ns1_then_ns2_with_the_internal_token(make_client, fake):
    pair = make_client().tokenize(PAN)

    assert [(s.namespace, s.operation) for s in fake.seen] == [("ns1", "tokenize"), ("ns2", "tokenize")]
    assert fake.seen[0].body == {"values": [PAN]}
    assert fake.seen[1].body == {"values": [pair.internal_token]}
    assert pair == TokenPair(fake.vault["ns1"][PAN], fake.vault["ns2"][pair.internal_token])
    assert fake.seen[0].headers["Authorization"] == f"Bearer {BEARER}"


def test_tokenize_is_convergent_and_detokenize_round_trips(make_client):
    client = make_client()
    pair = client.tokenize(PAN)

    assert client.tokenize(PAN) == pair
    assert client.detokenize(pair.external_ref_id) == PAN
    assert client.detokenize_internal(pair.internal_token) == PAN
    assert client.internal_for(pair.external_ref_id) == pair.internal_token
    assert client.external_for(pair.internal_token) == pair.external_ref_id
    assert client.lookup(PAN) == pair


def test_unknown_tokens_and_values_are_none_and_skip_the_second_hop(make_client, fake):
    client = make_client()

    assert client.detokenize("ext_unknown") is None
    assert client.lookup("never-seen") is None
    assert client.detokenize_internal("0000000000000000") is None
    assert client.internal_for("ext_unknown") is None
    assert client.external_for("0000000000000000") is None
    assert [(s.namespace, s.operation) for s in fake.seen] == [
        ("ns2", "detokenize"), ("ns1", "lookup"), ("ns1", "detokenize"), ("ns2", "detokenize"),
        ("ns2", "lookup")]
    assert "ns2" not in fake.vault or not fake.vault["ns2"], "lookup must create nothing"


def test_lookup_without_an_external_half_is_not_a_pair(make_client, fake):
    client = make_client()
    fake.token_for("ns1", PAN)  # NS1 knows the value, NS2 never saw the internal token

    assert client.lookup(PAN) is None


def test_batches_keep_order_and_map_unknowns_to_none(make_client):
    client = make_client()
    pairs = client.tokenize_batch(["a", "b", "a"])

    assert pairs[0] == pairs[2] != pairs[1]
    ext = [p.external_ref_id for p in pairs]
    assert client.detokenize_batch([ext[1], "ext_nope", ext[0]]) == ["b", None, "a"]
    assert client.lookup_batch(["x", "b", "a"]) == [None, pairs[1], pairs[0]]
    assert client.internal_for_batch(["ext_nope", ext[0]]) == [None, pairs[0].internal_token]
    assert client.external_for_batch([pairs[1].internal_token, "nope"]) == [ext[1], None]


def test_empty_batches_make_no_calls(make_client, fake):
    client = make_client()

    assert client.tokenize_batch([]) == []
    assert client.detokenize_batch([]) == []
    assert client.lookup_batch([]) == []
    assert client.generate_pairs(0) == []
    assert fake.seen == []


def test_a_single_string_is_not_accepted_as_a_batch(make_client):
    with pytest.raises(TypeError):
        make_client().tokenize_batch("abc")  # type: ignore[arg-type]


def test_batches_above_max_batch_are_split_and_rejoined_in_order(make_client, fake):
    client = make_client(max_batch=3)
    values = [f"v{i}" for i in range(7)]

    pairs = client.tokenize_batch(values)

    assert [len(s.body["values"]) for s in fake.calls("ns1", "tokenize")] == [3, 3, 1]
    assert [len(s.body["values"]) for s in fake.calls("ns2", "tokenize")] == [3, 3, 1]
    assert [p.internal_token for p in pairs] == [fake.vault["ns1"][v] for v in values]
    assert client.detokenize_batch([p.external_ref_id for p in pairs]) == values
    assert client.lookup_batch(values) == pairs
    assert all(len(s.body.get("values") or s.body.get("tokens")) <= 3 for s in fake.seen)


def test_generate_pairs_chunks_by_batch_size_and_binds_each_internal_token(make_client, fake):
    client = make_client(max_batch=4)

    pairs = client.generate_pairs(7, batch_size=2)

    assert [s.body["count"] for s in fake.calls("ns1", "generate")] == [2, 2, 2, 1]
    assert len({p.internal_token for p in pairs}) == 7
    assert all(client.internal_for(p.external_ref_id) == p.internal_token for p in pairs)
    client.generate_pairs(5, batch_size=100)  # capped at max_batch
    assert [s.body["count"] for s in fake.calls("ns1", "generate")][4:] == [4, 1]


# ---- retries -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", [500, 503, 429, httpx.ReadTimeout("slow"),
                                   httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"),
                                   httpx.RemoteProtocolError("hung up")],
                         ids=["500", "503", "429", "read-timeout", "connect-error", "connect-timeout",
                              "disconnect"])
def test_transient_failures_are_retried_and_recover(make_client, fake, fault):
    fake.faults = [fault, fault]
    client = make_client(max_attempts=3)

    pair = client.tokenize(PAN)

    assert len(fake.calls("ns1", "tokenize")) == 3
    assert client.call_counts[("ns1", "tokenize", "error")] == 2
    assert client.call_counts[("ns1", "tokenize", "ok")] == 1
    assert client.detokenize(pair.external_ref_id) == PAN


@pytest.mark.parametrize("fault", [503, httpx.ReadTimeout("slow"), httpx.ConnectError("refused")])
def test_retries_stop_at_max_attempts_with_tome_unavailable(make_client, fake, fault):
    fake.faults = [fault] * 10
    client = make_client(max_attempts=4)

    with pytest.raises(TomeUnavailable) as info:
        client.tokenize(PAN)

    assert len(fake.seen) == 4
    assert info.value.attempts == 4
    assert not isinstance(info.value, CircuitOpenError)
    assert client.call_counts == {("ns1", "tokenize", "error"): 4}


@pytest.mark.parametrize("status, error_cls, code", [
    (400, TomeRequestError, "invalid_request"),
    (401, TomeRequestError, "unauthorized"),
    (404, NamespaceNotFound, "namespace_not_found"),
])
def test_client_errors_are_never_retried(make_client, fake, status, error_cls, code):
    fake.faults = [status] * 3
    client = make_client(max_attempts=5)

    with pytest.raises(error_cls) as info:
        client.lookup(PAN)

    assert len(fake.seen) == 1
    assert (info.value.status, info.value.code) == (status, code)
    assert not isinstance(info.value, TomeUnavailable)


def test_unavailable_carries_status_and_retry_after(make_client, fake):
    fake.faults = [503] * 3

    with pytest.raises(TomeUnavailable) as info:
        make_client().tokenize(PAN)

    assert info.value.status_code == 503
    assert info.value.retry_after == 1.0


def test_retry_after_is_honoured_but_capped_by_backoff_max(make_client, fake):
    slow_down = lambda request: httpx.Response(  # noqa: E731
        429, json={"error": {"code": "rate_limited", "message": "x"}}, headers={"Retry-After": "0.3"})
    forever = lambda request: httpx.Response(  # noqa: E731
        503, json={"error": {"code": "unavailable", "message": "x"}}, headers={"Retry-After": "120"})
    fake.faults = [slow_down, forever]
    sleeps: list[float] = []

    make_client(sleeps=sleeps, backoff_initial=0.01, backoff_max=0.5).tokenize(PAN)

    assert sleeps[0] == pytest.approx(0.3, abs=0.03)  # the server's pace, not the 10 ms backoff
    assert sleeps[1] == 0.5  # 120 s requested, capped


def test_backoff_grows_exponentially_with_bounded_jitter(make_client, fake):
    fake.faults = [500] * 10
    sleeps: list[float] = []
    client = make_client(sleeps=sleeps, max_attempts=8, backoff_initial=0.01, backoff_max=0.2,
                         breaker_failure_threshold=100)

    with pytest.raises(TomeUnavailable):
        client.tokenize(PAN)

    assert len(sleeps) == 7  # between 8 attempts
    for n, slept in enumerate(sleeps, start=1):
        floor = min(0.01 * 2 ** (n - 1), 0.2)
        assert floor <= slept <= min(floor + 0.01, 0.2) + 1e-9
    assert max(sleeps) == 0.2


def test_generate_reuses_its_idempotency_key_across_retries_only(make_client, fake):
    fake.faults = [503, httpx.ReadTimeout("lost answer")]
    client = make_client()

    client.generate_pairs(2)
    client.generate_pairs(2)

    keys = [s.headers.get("Idempotency-Key") for s in fake.calls("ns1", "generate")]
    assert len(keys) == 4 and all(keys)
    assert keys[0] == keys[1] == keys[2] != keys[3]
    assert all("Idempotency-Key" not in s.headers for s in fake.calls("ns2"))


# ---- circuit breaker ------------------------------------------------------------------------------

def test_breaker_opens_after_consecutive_failures_and_fails_fast(make_client, fake):
    clock = FakeClock()
    fake.faults = [503] * 100
    client = make_client(clock=clock, max_attempts=2, breaker_failure_threshold=3,
                         breaker_reset_seconds=10)

    for _ in range(3):
        with pytest.raises(TomeUnavailable):
            client.tokenize(PAN)
    assert client.breaker_state == "open"
    http_calls = len(fake.seen)
    assert http_calls == 6

    clock.now += 4
    with pytest.raises(CircuitOpenError) as info:
        client.lookup(PAN)
    assert len(fake.seen) == http_calls, "an open circuit must not touch the network"
    assert info.value.retry_after == pytest.approx(6)
    assert isinstance(info.value, TomeUnavailable)


def test_breaker_half_opens_after_reset_and_closes_on_success(make_client, fake):
    clock = FakeClock()
    fake.faults = [503, 503]
    client = make_client(clock=clock, max_attempts=1, breaker_failure_threshold=2,
                         breaker_reset_seconds=10)
    for _ in range(2):
        with pytest.raises(TomeUnavailable):
            client.lookup(PAN)
    assert client.breaker_state == "open"

    clock.now += 10
    assert client.breaker_state == "half_open"
    assert client.lookup(PAN) is None  # the trial call succeeds
    assert client.breaker_state == "closed"


def test_a_failed_trial_reopens_the_circuit_for_another_period(make_client, fake):
    clock = FakeClock()
    fake.faults = [503, 503, 503]
    client = make_client(clock=clock, max_attempts=1, breaker_failure_threshold=2,
                         breaker_reset_seconds=10)
    for _ in range(2):
        with pytest.raises(TomeUnavailable):
            client.lookup(PAN)
    clock.now += 10

    with pytest.raises(TomeUnavailable) as info:
        client.lookup(PAN)  # the trial fails at TOME (a real HTTP call)
    assert not isinstance(info.value, CircuitOpenError)
    assert client.breaker_state == "open"
    with pytest.raises(CircuitOpenError):
        client.lookup(PAN)
    assert len(fake.seen) == 3


def test_half_open_lets_exactly_one_trial_through(make_client, fake):
    clock = FakeClock()
    release = threading.Event()
    entered = threading.Event()

    def slow_ok(request: httpx.Request) -> httpx.Response:
        entered.set()
        release.wait(5)
        return httpx.Response(200, json={"tokens": [None]})

    fake.faults = [503, slow_ok]
    client = make_client(clock=clock, max_attempts=1, breaker_failure_threshold=1,
                         breaker_reset_seconds=10)
    with pytest.raises(TomeUnavailable):
        client.lookup(PAN)
    clock.now += 10

    trial = threading.Thread(target=client.lookup, args=(PAN,))
    trial.start()
    assert entered.wait(5)
    with pytest.raises(CircuitOpenError):
        client.lookup(PAN)
    release.set()
    trial.join(5)
    assert client.breaker_state == "closed"
    assert len(fake.seen) == 2


def test_client_errors_do_not_count_as_breaker_failures(make_client, fake):
    fake.faults = [404, 404, 404, 503, 400]
    client = make_client(max_attempts=1, breaker_failure_threshold=2)

    for _ in range(3):
        with pytest.raises(NamespaceNotFound):
            client.lookup(PAN)
    with pytest.raises(TomeUnavailable):
        client.lookup(PAN)
    with pytest.raises(TomeRequestError):  # resets the consecutive-failure count: TOME answered
        client.lookup(PAN)
    assert client.breaker_state == "closed"


# ---- correlation, logging, redaction, counters ------------------------------------------------------

def test_correlation_id_comes_from_the_provider(make_client, fake):
    make_client(provider=lambda: "req-42").tokenize(PAN)

    assert {s.headers["X-Correlation-ID"] for s in fake.seen} == {"req-42"}


def test_correlation_id_defaults_to_the_current_scope(make_client, fake):
    client = make_client()
    with correlation_scope("scope-7"):
        client.lookup(PAN)

    assert fake.seen[0].headers["X-Correlation-ID"] == "scope-7"


def test_a_correlation_id_is_generated_when_none_is_bound_and_kept_across_retries(make_client, fake):
    fake.faults = [503]
    make_client(provider=lambda: None).lookup(PAN)

    ids = [s.headers["X-Correlation-ID"] for s in fake.seen]
    assert len(ids) == 2 and ids[0] == ids[1] and len(ids[0]) == 32


def test_every_http_attempt_is_one_call_record_and_one_count(make_client, fake):
    records: list[CallRecord] = []
    fake.faults = [500, httpx.ReadTimeout("slow")]
    client = make_client(on_call=records.append)

    client.tokenize_batch(["a", "b"])

    assert [(r.namespace, r.operation, r.attempt, r.outcome, r.status_code, r.batch_size)
            for r in records] == [("ns1", "tokenize", 1, "error", 500, 2),
                                  ("ns1", "tokenize", 2, "error", None, 2),
                                  ("ns1", "tokenize", 3, "ok", 200, 2),
                                  ("ns2", "tokenize", 1, "ok", 200, 2)]
    assert records[1].error == "ReadTimeout"
    assert all(r.latency_seconds >= 0 for r in records)
    assert client.call_counts == {("ns1", "tokenize", "error"): 2, ("ns1", "tokenize", "ok"): 1,
                                  ("ns2", "tokenize", "ok"): 1}


def test_a_failing_on_call_hook_does_not_fail_the_call(make_client):
    def broken(record: CallRecord) -> None:
        raise RuntimeError("metrics down")

    assert make_client(on_call=broken).lookup(PAN) is None


def test_call_counts_are_thread_safe(make_client):
    client = make_client()
    threads = [threading.Thread(target=lambda: [client.lookup(f"v{i}") for i in range(25)])
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert client.call_counts == {("ns1", "lookup", "ok"): 200}


def test_one_structured_log_line_per_attempt_without_values_tokens_or_bearer(make_client, fake, caplog):
    caplog.set_level(logging.INFO, logger="tokenpool.tome")
    fake.faults = [503]
    client = make_client()

    pair = client.tokenize(PAN)
    client.detokenize(pair.external_ref_id)
    fake.faults = [400]
    with pytest.raises(TomeRequestError) as info:
        client.lookup(PAN)

    lines = [r for r in caplog.records if r.name == "tokenpool.tome" and r.getMessage() == "tome_call"]
    assert len(lines) == 6  # ns1 tokenize x2, ns2 tokenize, ns2+ns1 detokenize, ns1 lookup
    first = lines[0]
    assert (first.namespace, first.operation, first.batch_size, first.attempt, first.outcome,
            first.status_code) == ("ns1", "tokenize", 1, 1, "error", 503)
    assert isinstance(first.latency_ms, float)
    secrets = [PAN, pair.internal_token, pair.external_ref_id, BEARER]
    formatter = JsonFormatter()
    rendered = "\n".join(formatter.format(r) for r in caplog.records) + caplog.text
    rendered += "".join(repr(vars(r)) for r in caplog.records)
    assert not [s for s in secrets if s in rendered]
    assert BEARER not in str(info.value) and BEARER not in repr(client.config)


def test_unavailable_messages_never_contain_the_bearer(make_client, fake):
    fake.faults = [httpx.ConnectError(f"refused Authorization: Bearer {BEARER}")] * 3

    with pytest.raises(TomeUnavailable) as info:
        make_client().tokenize(PAN)

    assert BEARER not in str(info.value) and PAN not in str(info.value)


def test_malformed_success_bodies_raise_response_errors(make_client, fake):
    fake.faults = [lambda request: httpx.Response(200, json={"tokens": []}),
                   lambda request: httpx.Response(200, text="<html>")]
    client = make_client()

    with pytest.raises(TomeResponseError):
        client.tokenize(PAN)
    with pytest.raises(TomeResponseError):
        client.tokenize(PAN)
    assert issubclass(TomeResponseError, TomeError)


# ---- ping --------------------------------------------------------------------------------------

def test_ping_probes_healthz_and_is_not_counted(make_client):
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/healthz"
        return httpx.Response(200, json={"status": "ok"})

    client = make_client(handler=handler)
    assert client.ping() is True
    assert client.call_counts == {}


@pytest.mark.parametrize("answer", [httpx.Response(503), httpx.ConnectError("refused"),
                                    httpx.ReadTimeout("slow")], ids=["503", "refused", "timeout"])
def test_ping_is_false_when_tome_is_unreachable(make_client, answer):
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert make_client(handler=handler).ping() is False


# ---- Django glue ------------------------------------------------------------------------------------

def test_django_client_is_a_process_singleton_rebuilt_when_settings_change(settings):
    from tome.provider import get_tome_client, reset_tome_client

    reset_tome_client()
    client = get_tome_client()
    assert get_tome_client() is client
    assert client.config.base_url == settings.TOME_BASE_URL

    settings.TOME_MAX_BATCH = 17
    settings.TOME_READ_TIMEOUT = 0.25
    rebuilt = get_tome_client()
    assert rebuilt is not client
    assert (rebuilt.config.max_batch, rebuilt.config.read_timeout) == (17, 0.25)
    reset_tome_client()
    assert get_tome_client() is not rebuilt
    reset_tome_client()
