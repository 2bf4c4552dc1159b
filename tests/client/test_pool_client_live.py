"""TokenPoolClient against a real TokenPool (pytest-django's ``live_server``, a threaded server on a
real port) and the TOME emulator over HTTP: the pool approach end to end, then the fallback with
TokenPool unreachable, checked by the emulator itself."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fixtures.processes import free_port
from tokenpool_tome import (
    CLIENT_DIRECT,
    NotAuthenticated,
    NotFound,
    Reservation,
    ReservationNotActive,
    TokenPoolClient,
    TokenPoolUnavailable,
    correlation_scope,
)


@pytest.fixture
def served_pool(live_server: Any, emulator_pool: dict[str, Any]) -> dict[str, Any]:
    """The emulator-made pool (tests/client/conftest.py) served by pytest-django's live server."""
    return {**emulator_pool, "url": live_server.url}


@pytest.fixture
def pool_client(served_pool: dict[str, Any]) -> Iterator[TokenPoolClient]:
    # Generous timeout: the threaded live server on a shared 2-core machine can stall for seconds.
    with TokenPoolClient(served_pool["url"], served_pool["key"], pool=served_pool["pool"].name,
                         timeout=30.0) as client:
        yield client


def test_reserve_confirm_lookup_detokenize_through_the_live_api(pool_client, served_pool):
    reservation = pool_client.reserve(owner_ref="card-1")

    assert isinstance(reservation, Reservation)
    assert reservation.source == "pool" and reservation.status == "RESERVED"
    assert reservation.pool == served_pool["pool"].name and reservation.owner_ref == "card-1"
    assert reservation.reserved_at < reservation.expires_at and reservation.used_at is None

    confirmed = pool_client.confirm(reservation.reservation_id)
    assert confirmed.status == "USED" and confirmed.used_at is not None
    assert confirmed.reservation_id == reservation.reservation_id
    assert pool_client.confirm(reservation).status == "USED"  # repeating is harmless

    by_internal = pool_client.lookup(reservation.internal_token)
    by_external = pool_client.detokenize(reservation.external_ref_id)
    assert by_internal == by_external == reservation.pair
    assert by_internal.status == "USED" and by_internal.source == "pool"
    assert pool_client.get_reservation(reservation.reservation_id).status == "USED"


def test_the_same_idempotency_key_returns_the_same_reservation(pool_client):
    first = pool_client.reserve(idempotency_key="order-42")
    again = pool_client.reserve(idempotency_key="order-42")
    other = pool_client.reserve()

    assert again.reservation_id == first.reservation_id and again.pair == first.pair
    assert other.reservation_id != first.reservation_id and other.pair != first.pair


def test_batch_forms_keep_request_order_and_answer_none_for_unknowns(pool_client):
    reservations = pool_client.reserve_batch(3, owner_ref="bulk")
    assert len({r.reservation_id for r in reservations}) == 3
    assert {r.owner_ref for r in reservations} == {"bulk"}

    internals = [reservations[2].internal_token, "0000000000000000", reservations[0].internal_token]
    assert pool_client.lookup_batch(internals) == [reservations[2].pair, None, reservations[0].pair]
    externals = ["ext_unknown", reservations[1].external_ref_id]
    assert pool_client.detokenize_batch(externals) == [None, reservations[1].pair]


def test_release_then_confirm_is_a_typed_409_and_unknowns_are_typed_404(pool_client):
    released = pool_client.release(pool_client.reserve())
    assert released.status == "RETIRED"

    with pytest.raises(ReservationNotActive) as raised:
        pool_client.confirm(released.reservation_id)
    assert raised.value.status == 409 and raised.value.code == "reservation_not_active"
    assert raised.value.correlation_id

    with pytest.raises(NotFound):
        pool_client.confirm("00000000-0000-0000-0000-000000000000")


def test_a_4xx_never_falls_back_and_keeps_the_servers_correlation_id(served_pool, tome_library, tome):
    tome.reset_stats()
    with (TokenPoolClient(served_pool["url"], "not-a-key", pool=served_pool["pool"].name, tome=tome_library,
                          timeout=30.0) as client, correlation_scope("corr-4xx-test"),
          pytest.raises(NotAuthenticated) as raised):
        client.reserve()
    assert raised.value.status == 401 and raised.value.correlation_id == "corr-4xx-test"
    assert tome.calls(tome.ns1, "generate") == 0


def test_with_tokenpool_down_the_fallback_makes_live_pairs_the_emulator_resolves(
        pool_client, tome_library, tome, caplog):
    issued = pool_client.confirm(pool_client.reserve())  # while TokenPool is up
    tome.reset_stats()
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    with TokenPoolClient(down, "any-key", tome=tome_library, sleep=lambda _: None) as client:
        # Pairs TokenPool issued earlier still resolve, through TOME's NS2.
        assert client.detokenize(issued.external_ref_id) == issued.pair
        assert client.lookup(issued.internal_token) == issued.pair

        with caplog.at_level(logging.WARNING, logger="tokenpool.client"):
            reservation = client.reserve(owner_ref="card-9")
        batch = client.reserve_batch(2)

        assert reservation.source == CLIENT_DIRECT and reservation.reservation_id is None
        assert reservation.status == "RESERVED" and reservation.owner_ref == "card-9"
        assert [r.source for r in batch] == [CLIENT_DIRECT] * 2
        assert len({reservation.pair, *(r.pair for r in batch)}) == 3
        assert client.confirm(reservation).status == "USED"
        assert client.release(batch[0]).status == "RETIRED"

        # The emulator binds the pair: NS2 maps the external ref back to the internal token.
        assert client.detokenize(reservation.external_ref_id) == reservation.pair
        assert client.lookup(reservation.internal_token).external_ref_id == reservation.external_ref_id
        assert client.lookup_batch([batch[1].internal_token, "0000000000000001"]) == [batch[1].pair, None]
        assert client.detokenize_batch(["ext_nope", batch[0].external_ref_id]) == [None, batch[0].pair]

    assert tome.calls(tome.ns1, "generate") == 2 and tome.calls(tome.ns2, "tokenize") == 2
    # Once TokenPool answers again it resolves the client_direct pair too, by a live NS2 call.
    resolved = pool_client.detokenize(reservation.external_ref_id)
    assert resolved == reservation.pair and resolved.source == "tome"
    warnings = [r for r in caplog.records if r.getMessage() == "tokenpool_fallback_to_tome"]
    assert warnings and reservation.internal_token not in caplog.text and "any-key" not in caplog.text


def test_without_a_fallback_an_unreachable_tokenpool_raises_unavailable():
    down = f"http://127.0.0.1:{free_port()}"
    with TokenPoolClient(down, "any-key", sleep=lambda _: None) as client, \
            pytest.raises(TokenPoolUnavailable) as raised:
        client.reserve()
    assert raised.value.code == "connection_error" and raised.value.status is None


class LoseFirstAnswers(httpx.HTTPTransport):
    """Delivers each of the first ``lose`` requests to the server, then drops its answer (as a read
    timeout would): the server did the work, the client never heard."""

    def __init__(self, lose: int) -> None:
        super().__init__()
        self.lose = lose
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        response = super().handle_request(request)
        if self.lose > 0:
            self.lose -= 1
            response.read()
            response.close()
            raise httpx.ReadTimeout("answer lost", request=request)
        return response


def test_a_reservation_whose_answer_was_lost_is_retried_without_taking_a_second_pair(served_pool):
    from pool.models import TokenPair as StoredPair

    transport = LoseFirstAnswers(lose=2)
    with TokenPoolClient(served_pool["url"], served_pool["key"], pool=served_pool["pool"].name, timeout=30.0,
                         transport=transport, sleep=lambda _: None) as client:
        reservation = client.reserve()

    assert len(transport.sent) == 3 and len({r.headers["Idempotency-Key"] for r in transport.sent}) == 1
    reserved = StoredPair.objects.filter(pool=served_pool["pool"], status="RESERVED")
    assert [p.internal_token for p in reserved] == [reservation.internal_token]


def test_one_client_shared_by_threads_never_gets_a_pair_twice(pool_client, run_concurrently):
    # run_concurrently holds the six threads at a Barrier so their first requests really race.
    batches = run_concurrently(lambda: [pool_client.reserve() for _ in range(3)], threads=6)
    pairs = [r.pair for batch in batches for r in batch]
    assert len(pairs) == len(set(pairs)) == 18
    assert {r.source for batch in batches for r in batch} == {"pool"}
