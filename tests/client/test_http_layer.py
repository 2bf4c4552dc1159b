"""The HTTP layer both clients share (tokenpool_tome/http_layer.py), over ``httpx.MockTransport``:
headers kept across attempts, which outcomes are retried, how each outcome moves the circuit
breaker (including the two per-client choices), error-body reading and Retry-After pacing."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.client.scripted import Server
from tokenpool_tome import HttpTokenizationLibrary, TokenPoolClient
from tokenpool_tome.breaker import CircuitBreaker
from tokenpool_tome.errors import CircuitOpenError
from tokenpool_tome.http_layer import (
    Attempt,
    HttpClientLifecycle,
    HttpLayer,
    Refused,
    RetriesExhausted,
    Unsendable,
    read_error_answer,
)
from tokenpool_tome.retry_policy import RetryPolicy


def read_body(body: Any) -> tuple[str, str, dict[str, Any] | None, str | None]:
    return str(body["code"]), str(body.get("detail", "")), body.get("errors"), body.get("correlation_id")


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_layer(sleeps: list[float]) -> Iterator[Callable[..., HttpLayer]]:
    layers: list[HttpLayer] = []

    def make(server: Server, *, max_attempts: int = 3, threshold: int = 2, retry_after_max: float = 5.0,
             provider: Callable[[], str | None] = lambda: None, **flags: bool) -> HttpLayer:
        layer = HttpLayer(base_url="http://server.test", authorization="Api-Key k", timeout=httpx.Timeout(1.0),
                          retry=RetryPolicy(max_attempts, 0.01, 0.5, retry_after_max=retry_after_max),
                          breaker=CircuitBreaker(failure_threshold=threshold, reset_seconds=10.0),
                          read_error_body=read_body, transport=httpx.MockTransport(server),
                          correlation_id_provider=provider, sleep=sleeps.append, **flags)
        layers.append(layer)
        return layer

    yield make
    for layer in layers:
        layer.close()


def send(layer: HttpLayer, *, observe: Callable[[Attempt], None] | None = None,
         idempotency_key: str | None = None) -> httpx.Response:
    return layer.send("POST", "/things", json={"a": 1}, headers=layer.headers(idempotency_key), observe=observe)


def error(status: int, code: str = "boom", **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "detail": "d"}, headers=headers)


def test_every_attempt_of_a_call_sends_the_same_correlation_id_and_idempotency_key(make_layer):
    server = Server(httpx.ConnectError("refused"), error(503), httpx.Response(200, json={}))
    seen: list[Attempt] = []

    send(make_layer(server), observe=seen.append, idempotency_key="key-1")

    assert len({r.headers["X-Correlation-ID"] for r in server.requests}) == 1
    assert [r.headers["Idempotency-Key"] for r in server.requests] == ["key-1"] * 3
    assert [(a.number, a.retryable, a.ok, a.error) for a in seen] == [
        (1, True, False, "ConnectError"), (2, True, False, "503 boom"), (3, False, True, None)]


def test_the_bound_correlation_id_is_sent_and_a_fresh_one_otherwise(make_layer):
    bound = make_layer(Server(httpx.Response(200)), provider=lambda: "corr-7")
    assert bound.headers() == {"X-Correlation-ID": "corr-7"}
    fresh = make_layer(Server(httpx.Response(200))).headers()["X-Correlation-ID"]
    assert len(fresh) == 32


def test_exhausted_retries_report_the_last_attempt_and_count_one_breaker_failure(make_layer):
    layer = make_layer(Server(error(503, "unavailable", **{"Retry-After": "1"})))

    with pytest.raises(RetriesExhausted) as raised:
        send(layer)

    last = raised.value.attempt
    assert (last.number, last.status_code, last.answer.code, last.answer.retry_after) == (3, 503, "unavailable", 1.0)
    assert layer.breaker.consecutive_failures == 1


def test_an_open_circuit_fails_fast_without_a_request(make_layer):
    server = Server(httpx.ConnectError("refused"))
    layer = make_layer(server, max_attempts=1, threshold=1)
    with pytest.raises(RetriesExhausted):
        send(layer)

    with pytest.raises(CircuitOpenError):
        send(layer)
    assert len(server.requests) == 1 and layer.breaker.state == "open"


@pytest.mark.parametrize(("throttling_proves_up", "state"), [(True, "closed"), (False, "open")])
def test_a_429_that_outlasts_the_retries_is_an_answer_only_where_the_client_says_so(
        make_layer, throttling_proves_up, state):
    server = Server(error(503), error(429, "throttled"))
    layer = make_layer(server, max_attempts=1, throttling_proves_up=throttling_proves_up)
    with pytest.raises(RetriesExhausted):
        send(layer)  # one outage: one failure of the two the breaker allows

    with pytest.raises(RetriesExhausted) as raised:
        send(layer)

    assert raised.value.attempt.status_code == 429
    assert layer.breaker.state == state


def test_a_refusal_is_never_retried_and_proves_the_server_up(make_layer):
    server = Server(error(503), error(409, "conflict", **{"X-Correlation-ID": "srv-9"}))
    layer = make_layer(server, max_attempts=1)
    with pytest.raises(RetriesExhausted):
        send(layer)

    with pytest.raises(Refused) as raised:
        send(layer)

    assert (raised.value.answer.status, raised.value.answer.code, raised.value.answer.correlation_id) == \
        (409, "conflict", "srv-9")
    assert len(server.requests) == 2 and layer.breaker.consecutive_failures == 0


@pytest.mark.parametrize(("unsendable_proves_up", "failures"), [(True, 0), (False, 1)])
def test_an_unsendable_request_is_not_retried_and_moves_the_breaker_as_the_client_says(
        make_layer, unsendable_proves_up, failures):
    server = Server(error(503), httpx.UnsupportedProtocol("ftp"))
    layer = make_layer(server, max_attempts=1, unsendable_proves_up=unsendable_proves_up)
    with pytest.raises(RetriesExhausted):
        send(layer)

    with pytest.raises(Unsendable) as raised:
        send(layer)

    assert raised.value.attempt.error == "UnsupportedProtocol" and len(server.requests) == 2
    assert layer.breaker.consecutive_failures == failures


def test_retry_after_paces_the_retries_within_the_cap(make_layer, sleeps):
    server = Server(error(429, **{"Retry-After": "2"}), error(503, **{"Retry-After": "120"}), httpx.Response(200))

    send(make_layer(server, retry_after_max=5.0))

    assert sleeps == [2.0, 5.0]


@pytest.mark.parametrize(("answer", "expected"), [
    (httpx.Response(502, text="<html>bad gateway</html>"), ("http_error", "Bad Gateway", "sent")),
    (httpx.Response(400, json={"code": "c", "detail": "d"}), ("c", "d", "sent")),
    (httpx.Response(400, json={"code": "c"}, headers={"X-Correlation-ID": "hdr"}), ("c", "", "hdr")),
    (httpx.Response(400, json={"code": "c", "correlation_id": "body"}, headers={"X-Correlation-ID": "hdr"}),
     ("c", "", "body")),
    (httpx.Response(400, json=["not", "an", "object"]), ("http_error", "Bad Request", "sent")),
], ids=["html", "json", "header-id", "body-id", "list-body"])
def test_error_bodies_are_read_whatever_was_sent(answer, expected):
    read = read_error_answer(answer, sent_correlation_id="sent", read_body=read_body)
    assert (read.code, read.message, read.correlation_id) == expected


def test_a_probe_reports_without_retrying_or_touching_the_breaker(make_layer):
    server = Server(error(503), httpx.ConnectError("refused"), httpx.Response(200))
    layer = make_layer(server, threshold=1)

    assert [layer.probe("/healthz", timeout=httpx.Timeout(0.5)) for _ in range(3)] == [False, False, True]
    assert len(server.requests) == 3 and layer.breaker.state == "closed"


def test_both_clients_are_built_on_the_shared_layer():
    assert issubclass(HttpTokenizationLibrary, HttpClientLifecycle)
    assert issubclass(TokenPoolClient, HttpClientLifecycle)


def test_the_lifecycle_closes_the_connection_pool(make_layer):
    class Client(HttpClientLifecycle):
        def __init__(self, layer: HttpLayer) -> None:
            self._http = layer

    layer = make_layer(Server(httpx.Response(200)))
    with Client(layer) as client:
        assert client.breaker_state == "closed"
    assert layer.client.is_closed
