"""TokenPoolClient over ``httpx.MockTransport`` (no network, no real sleeping): request shape, parsing,
retries and Retry-After, idempotency keys, error mapping, batch order and the TOME fallback."""
from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.client.scripted import Server
from tokenpool_tome import (
    CLIENT_DIRECT,
    IdempotencyKeyReused,
    InvalidRequest,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    Reservation,
    ReservationNotActive,
    Throttled,
    TokenPair,
    TokenPoolClient,
    TokenPoolError,
    TokenPoolUnavailable,
    TomeUnavailable,
    correlation_scope,
)

BASE = "http://tokenpool.test"
KEY = "tp_secret_key_value"


def reservation_body(n: int = 1, **overrides: Any) -> dict[str, Any]:
    body = {"reservation_id": str(uuid.UUID(int=n)), "pool": "default",
            "internal_token": f"{7000000000000000 + n}", "external_ref_id": f"ext_{n:08d}",
            "status": "RESERVED", "source": "pool", "owner_ref": None,
            "reserved_at": "2026-11-29T10:00:00.123456Z", "expires_at": "2026-11-29T10:15:00.123456Z",
            "used_at": None}
    return {**body, **overrides}


def error(status: int, code: str, *, headers: dict[str, str] | None = None, **extra: Any) -> httpx.Response:
    correlation_id = "srv-corr-1"
    return httpx.Response(status, json={"code": code, "detail": f"{code} sentence", "correlation_id": correlation_id,
                                        **extra},
                          headers={"X-Correlation-ID": correlation_id, **(headers or {})})


class FakeTome:
    """A TokenizationLibrary stand-in: remembers the pairs it made and answers NS2 lookups from them."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.pairs: dict[str, str] = {}
        self.calls: list[str] = []

    def _check(self, name: str) -> None:
        self.calls.append(name)
        if self.fail:
            raise TomeUnavailable("TOME down too")

    def generate_pairs(self, count: int, *, batch_size: int | None = None) -> list[TokenPair]:
        self._check("generate_pairs")
        made = []
        for _ in range(count):
            n = len(self.pairs) + 1
            internal, external = f"{9000000000000000 + n}", f"ext_live_{n}"
            self.pairs[internal] = external
            made.append(TokenPair(internal, external))
        return made

    def external_for(self, internal_token: str) -> str | None:
        self._check("external_for")
        return self.pairs.get(internal_token)

    def internal_for(self, external_ref_id: str) -> str | None:
        self._check("internal_for")
        return {e: i for i, e in self.pairs.items()}.get(external_ref_id)

    def external_for_batch(self, internal_tokens: Sequence[str]) -> list[str | None]:
        self._check("external_for_batch")
        return [self.pairs.get(t) for t in internal_tokens]

    def internal_for_batch(self, external_ref_ids: Sequence[str]) -> list[str | None]:
        self._check("internal_for_batch")
        by_external = {e: i for i, e in self.pairs.items()}
        return [by_external.get(e) for e in external_ref_ids]


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_client(sleeps: list[float]) -> Iterator[Callable[..., TokenPoolClient]]:
    clients: list[TokenPoolClient] = []

    def make(server: Server, **kwargs: Any) -> TokenPoolClient:
        kwargs.setdefault("sleep", sleeps.append)
        client = TokenPoolClient(BASE, KEY, transport=httpx.MockTransport(server), **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


# ---- request shape and parsing -------------------------------------------------------------------

def test_reserve_sends_key_body_and_headers_and_parses_every_field(make_client):
    server = Server(httpx.Response(201, json=reservation_body(owner_ref="card-1")))
    client = make_client(server, pool="cards")

    reservation = client.reserve(owner_ref="card-1")

    request = server.requests[0]
    assert request.method == "POST" and request.url == f"{BASE}/api/v1/reservations"
    assert request.headers["Authorization"] == f"Api-Key {KEY}"
    assert server.bodies() == [{"pool": "cards", "owner_ref": "card-1"}]
    assert uuid.UUID(request.headers["Idempotency-Key"]).version == 4
    assert request.headers["X-Correlation-ID"]
    assert reservation == Reservation(
        reservation_id=str(uuid.UUID(int=1)), pool="default", internal_token="7000000000000001",
        external_ref_id="ext_00000001", status="RESERVED", source="pool", owner_ref="card-1",
        reserved_at=datetime(2026, 11, 29, 10, 0, 0, 123456, tzinfo=UTC),
        expires_at=datetime(2026, 11, 29, 10, 15, 0, 123456, tzinfo=UTC), used_at=None)
    assert reservation.pair == TokenPair("7000000000000001", "ext_00000001")


def test_each_reservation_gets_its_own_generated_key_and_a_callers_key_is_sent_verbatim(make_client):
    server = Server(httpx.Response(201, json=reservation_body()))
    client = make_client(server)

    client.reserve()
    client.reserve()
    client.reserve(idempotency_key="order-42")

    first, second, third = server.header("Idempotency-Key")
    assert first != second and third == "order-42"
    with pytest.raises(ValueError):
        client.reserve(idempotency_key="x" * 256)


def test_repr_of_client_and_reservation_never_shows_the_key_or_tokens(make_client):
    client = make_client(Server(httpx.Response(201, json=reservation_body())))
    reservation = client.reserve()
    assert KEY not in repr(client)
    assert reservation.internal_token not in repr(reservation)
    assert reservation.external_ref_id not in repr(reservation)


def test_a_2xx_with_a_malformed_body_is_an_error_not_a_fallback(make_client):
    tome = FakeTome()
    client = make_client(Server(httpx.Response(201, json={"reservation_id": "x"})), tome=tome)
    with pytest.raises(TokenPoolError) as raised:
        client.reserve()
    assert raised.value.code == "malformed_response" and tome.calls == []


# ---- retries -------------------------------------------------------------------------------------

def test_retries_reuse_the_idempotency_key_and_correlation_id(make_client, sleeps):
    server = Server(httpx.ConnectError("refused"), error(503, "database_unavailable"),
                    httpx.Response(201, json=reservation_body()))
    client = make_client(server, max_attempts=3)

    with correlation_scope("corr-abc"):
        reservation = client.reserve()

    assert reservation.source == "pool" and len(server.requests) == 3
    assert len(set(server.header("Idempotency-Key"))) == 1
    assert server.header("X-Correlation-ID") == ["corr-abc"] * 3
    assert len(sleeps) == 2 and all(0 <= s <= 2.0 for s in sleeps)


def test_backoff_grows_exponentially_between_attempts(make_client, sleeps):
    server = Server(httpx.ReadTimeout("slow"))
    client = make_client(server, max_attempts=4, backoff_initial=0.1, backoff_max=10.0)
    with pytest.raises(TokenPoolUnavailable) as raised:
        client.reserve()
    assert raised.value.code == "timeout" and len(server.requests) == 4
    # wait n = 0.1 * 2^(n-1) + jitter in [0, 0.1]
    assert 0.1 <= sleeps[0] <= 0.2 and 0.2 <= sleeps[1] <= 0.3 and 0.4 <= sleeps[2] <= 0.5


def test_retry_after_is_honoured_and_capped(make_client, sleeps):
    server = Server(error(429, "throttled", headers={"Retry-After": "2"}),
                    error(503, "pool_unavailable", headers={"Retry-After": "120"}),
                    httpx.Response(201, json=reservation_body()))
    client = make_client(server, max_attempts=3, retry_after_max=5.0)

    client.reserve()

    assert sleeps == [2.0, 5.0]


def test_throttled_after_the_retries_raises_throttled_and_never_falls_back(make_client, sleeps):
    tome = FakeTome()
    server = Server(error(429, "throttled", headers={"Retry-After": "1"}))
    client = make_client(server, tome=tome, max_attempts=2)

    with pytest.raises(Throttled) as raised:
        client.reserve()

    assert raised.value.status == 429 and raised.value.retry_after == 1.0
    assert len(server.requests) == 2 and tome.calls == []
    assert client.breaker_state == "closed"


def test_confirm_and_release_are_retried_because_they_are_idempotent(make_client):
    server = Server(error(502, "http_error"), httpx.Response(200, json=reservation_body(status="USED")),
                    httpx.ConnectError("reset"), httpx.Response(200, json=reservation_body(status="RETIRED")))
    client = make_client(server)
    rid = str(uuid.UUID(int=1))

    assert client.confirm(rid, owner_ref="card-7").status == "USED"
    assert client.release(rid).status == "RETIRED"

    assert [r.url.path for r in server.requests] == [f"/api/v1/reservations/{rid}/confirm"] * 2 + \
        [f"/api/v1/reservations/{rid}/release"] * 2
    assert server.bodies() == [{"owner_ref": "card-7"}] * 2 + [{}] * 2


# ---- 4xx: typed errors, no retry, no fallback ----------------------------------------------------

@pytest.mark.parametrize(("status", "code", "error_cls"), [
    (400, "invalid_request", InvalidRequest),
    (401, "not_authenticated", NotAuthenticated),
    (403, "permission_denied", PermissionDenied),
    (404, "not_found", NotFound),
    (409, "reservation_not_active", ReservationNotActive),
    (422, "idempotency_key_reused", IdempotencyKeyReused),
    (413, "payload_too_large", TokenPoolError),
])
def test_a_4xx_raises_its_typed_error_once_and_never_falls_back(make_client, status, code, error_cls):
    tome = FakeTome()
    server = Server(error(status, code, errors={"owner_ref": ["too long"]}))
    client = make_client(server, tome=tome)

    with pytest.raises(error_cls) as raised:
        client.reserve(owner_ref="x")

    err = raised.value
    assert (err.status, err.code, err.detail, err.correlation_id) == (status, code, f"{code} sentence", "srv-corr-1")
    assert err.errors == {"owner_ref": ["too long"]}
    assert not isinstance(err, TokenPoolUnavailable)
    assert len(server.requests) == 1 and tome.calls == []


def test_a_non_json_error_page_still_raises_with_the_status(make_client):
    server = Server(httpx.Response(418, text="<html>teapot</html>"))
    with pytest.raises(TokenPoolError) as raised:
        make_client(server).release("abc")
    assert raised.value.status == 418 and raised.value.code == "http_error"
    assert raised.value.correlation_id  # the id the client sent, since the answer had none


# ---- fallback ------------------------------------------------------------------------------------

def test_5xx_after_the_retries_falls_back_to_a_live_client_direct_pair(make_client, caplog):
    tome = FakeTome()
    server = Server(error(503, "database_unavailable"))
    client = make_client(server, tome=tome, max_attempts=2, pool="cards")

    with caplog.at_level(logging.WARNING, logger="tokenpool.client"):
        reservation = client.reserve(owner_ref="card-3")

    assert len(server.requests) == 2 and tome.calls == ["generate_pairs"]
    assert reservation.source == CLIENT_DIRECT and reservation.is_client_direct
    assert reservation.reservation_id is None and reservation.expires_at is None
    assert (reservation.status, reservation.pool, reservation.owner_ref) == ("RESERVED", "cards", "card-3")
    assert tome.pairs[reservation.internal_token] == reservation.external_ref_id
    [record] = [r for r in caplog.records if r.getMessage() == "tokenpool_fallback_to_tome"]
    assert record.operation == "reserve" and record.reason == "database_unavailable"
    assert record.correlation_id == "srv-corr-1"
    assert reservation.internal_token not in caplog.text and KEY not in caplog.text


def test_without_a_fallback_5xx_raises_unavailable_with_the_servers_correlation_id(make_client):
    server = Server(error(500, "internal_error"))
    with pytest.raises(TokenPoolUnavailable) as raised:
        make_client(server, max_attempts=2).reserve()
    assert (raised.value.status, raised.value.code, raised.value.correlation_id) == \
        (500, "internal_error", "srv-corr-1")


def test_when_tome_is_down_too_the_error_says_both(make_client):
    server = Server(httpx.ConnectError("refused"))
    with pytest.raises(TokenPoolUnavailable) as raised:
        make_client(server, tome=FakeTome(fail=True)).reserve()
    assert "TOME fallback failed" in str(raised.value)
    assert isinstance(raised.value.__cause__, TomeUnavailable)


def test_reserve_batch_falls_back_for_the_whole_count(make_client):
    tome = FakeTome()
    client = make_client(Server(httpx.ConnectError("refused")), tome=tome)
    reservations = client.reserve_batch(3, owner_ref="bulk")
    assert [r.source for r in reservations] == [CLIENT_DIRECT] * 3
    assert len({r.pair for r in reservations}) == 3 and {r.owner_ref for r in reservations} == {"bulk"}


def test_client_direct_reservations_are_confirmed_and_released_locally(make_client):
    tome = FakeTome()
    server = Server(httpx.ConnectError("refused"))
    client = make_client(server, tome=tome, max_attempts=1)
    reservation = client.reserve()
    sent = len(server.requests)

    confirmed = client.confirm(reservation, owner_ref="card-5")
    released = client.release(client.reserve())

    assert confirmed.status == "USED" and confirmed.used_at is not None and confirmed.owner_ref == "card-5"
    assert confirmed.pair == reservation.pair and released.status == "RETIRED"
    assert len(server.requests) == sent + 1  # the second reserve only; confirm/release sent nothing
    with pytest.raises(ValueError):
        client.confirm(reservation.reservation_id)


def test_lookup_and_detokenize_fall_back_to_ns2(make_client):
    tome = FakeTome()
    [made] = tome.generate_pairs(1)
    client = make_client(Server(httpx.ConnectError("refused")), tome=tome, max_attempts=1)

    looked_up = client.lookup(made.internal_token)
    detokenized = client.detokenize(made.external_ref_id)

    assert looked_up == detokenized == made
    assert looked_up.source == detokenized.source == CLIENT_DIRECT
    assert client.lookup("1234") is None and client.detokenize("ext_nope") is None
    assert client.lookup_batch(["1234", made.internal_token]) == [None, made]
    assert client.detokenize_batch([made.external_ref_id, "ext_nope"]) == [made, None]


def test_an_open_circuit_fails_fast_to_the_fallback_without_calling_tokenpool(make_client):
    now = [0.0]
    tome = FakeTome()
    server = Server(httpx.ConnectError("refused"))
    client = make_client(server, tome=tome, max_attempts=1, breaker_failure_threshold=2,
                         breaker_reset_seconds=10.0, clock=lambda: now[0])

    for _ in range(5):
        assert client.reserve().source == CLIENT_DIRECT

    assert len(server.requests) == 2 and client.breaker_state == "open"
    server.answers = [httpx.Response(201, json=reservation_body())]
    now[0] = 11.0  # past the reset period: one trial call, which succeeds and closes the circuit
    assert client.reserve().source == "pool" and client.breaker_state == "closed"


# ---- lookups -------------------------------------------------------------------------------------

def test_lookup_and_detokenize_answer_none_on_not_found_and_parse_the_pair(make_client):
    pair = {"internal_token": "7000000000000001", "external_ref_id": "ext_1", "status": "USED", "source": "pool"}
    server = Server(error(404, "not_found"), httpx.Response(200, json=pair))
    client = make_client(server, tome=FakeTome())

    assert client.lookup("7000000000000009") is None
    found = client.detokenize("ext_1")

    assert found == TokenPair("7000000000000001", "ext_1")
    assert (found.status, found.source) == ("USED", "pool")
    assert server.bodies() == [{"internal_token": "7000000000000009"}, {"external_ref_id": "ext_1"}]


def test_batch_lookups_keep_request_order_and_split_above_1000(make_client):
    def answer(request: httpx.Request) -> httpx.Response:
        tokens = json.loads(request.content)["internal_tokens"]
        return httpx.Response(200, json={"results": [
            {"internal_token": t, "code": "not_found"} if int(t) % 3 == 0 else
            {"internal_token": t, "external_ref_id": f"ext_{t}", "status": "USED", "source": "pool"}
            for t in tokens]})

    server = Server(answer)
    tokens = [str(n) for n in range(1, 1502)]

    results = make_client(server).lookup_batch(tokens)

    assert [len(b["internal_tokens"]) for b in server.bodies()] == [1000, 501]
    assert results == [None if int(t) % 3 == 0 else TokenPair(t, f"ext_{t}") for t in tokens]


def test_detokenize_batch_maps_not_found_items_to_none(make_client):
    server = Server(httpx.Response(200, json={"results": [
        {"external_ref_id": "ext_a", "code": "not_found"},
        {"internal_token": "71", "external_ref_id": "ext_b", "status": "RETIRED", "source": "pool"}]}))
    assert make_client(server).detokenize_batch(["ext_a", "ext_b"]) == [None, TokenPair("71", "ext_b")]
    with pytest.raises(TypeError):
        make_client(server).detokenize_batch("ext_a")  # a lone string is a mistake, not 5 tokens


def test_reserve_batch_splits_above_500_with_stable_derived_keys(make_client):
    def answer(request: httpx.Request) -> httpx.Response:
        count = json.loads(request.content)["count"]
        return httpx.Response(201, json={"reservations": [reservation_body(n) for n in range(count)]})

    server = Server(httpx.ConnectError("blip"), answer)
    reservations = make_client(server).reserve_batch(700, idempotency_key="bulk-1")

    assert len(reservations) == 700
    assert [b["count"] for b in server.bodies()] == [500, 500, 200]  # first try lost, retried
    assert server.header("Idempotency-Key") == ["bulk-1.0", "bulk-1.0", "bulk-1.1"]


def test_reserve_batch_of_one_chunk_uses_the_key_itself(make_client):
    server = Server(httpx.Response(201, json={"reservations": [reservation_body(1), reservation_body(2)]}))
    assert len(make_client(server).reserve_batch(2, idempotency_key="k")) == 2
    assert server.header("Idempotency-Key") == ["k"] and server.bodies() == [{"pool": "default", "count": 2}]
    with pytest.raises(ValueError):
        make_client(server).reserve_batch(0)


def test_a_callers_key_retried_during_an_outage_gets_the_same_fallback_pair(make_client):
    tome = FakeTome()
    client = make_client(Server(httpx.ConnectError("refused")), tome=tome, max_attempts=1)

    first = client.reserve(idempotency_key="order-7")
    again = client.reserve(idempotency_key="order-7")
    other = client.reserve(idempotency_key="order-8")
    unkeyed = [client.reserve(), client.reserve()]

    assert again.pair == first.pair and other.pair != first.pair
    assert unkeyed[0].pair != unkeyed[1].pair  # generated keys are never repeated, so nothing to remember
    assert tome.calls.count("generate_pairs") == 4
    assert client.reserve_batch(2, idempotency_key="b") == client.reserve_batch(2, idempotency_key="b")


@pytest.mark.parametrize("base", [BASE, f"{BASE}/", f"{BASE}/api/v1", f"{BASE}/api/v1/"])
def test_the_api_root_is_added_once(make_client, base):
    server = Server(error(404, "not_found"))
    client = TokenPoolClient(base, KEY, transport=httpx.MockTransport(server))
    assert client.lookup("7000000000000001") is None
    client.close()
    assert str(server.requests[0].url) == f"{BASE}/api/v1/lookup"


def test_the_fallbacks_tome_calls_carry_the_failed_requests_correlation_id(make_client):
    seen: list[str | None] = []

    class RecordingTome(FakeTome):
        def generate_pairs(self, count: int, *, batch_size: int | None = None) -> list[TokenPair]:
            from tokenpool_tome import get_correlation_id

            seen.append(get_correlation_id())
            return super().generate_pairs(count)

    client = make_client(Server(error(503, "database_unavailable")), tome=RecordingTome(), max_attempts=1)
    client.reserve()
    with correlation_scope("caller-id"):
        client.reserve()
    assert seen == ["srv-corr-1", "caller-id"]


def test_an_outage_warns_once_per_operation_and_interval_with_a_count(make_client, caplog):
    now = [0.0]
    client = make_client(Server(httpx.ConnectError("refused")), tome=FakeTome(), max_attempts=1,
                         breaker_failure_threshold=1000, clock=lambda: now[0])

    def warnings() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.levelno == logging.WARNING
                and r.getMessage() == "tokenpool_fallback_to_tome"]

    with caplog.at_level(logging.WARNING, logger="tokenpool.client"):
        for _ in range(4):
            client.reserve()
        client.lookup("7000000000000001")
        now[0] = 10.0
        client.reserve()

    assert [(r.operation, r.fallbacks_not_logged) for r in warnings()] == [
        ("reserve", 0), ("lookup", 0), ("reserve", 3)]
