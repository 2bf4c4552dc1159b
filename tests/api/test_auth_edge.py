"""Authentication at the edge (issue 10 #2, #6): the key is checked from the headers before any body
byte is read, and a throttled address costs no key lookup."""
from __future__ import annotations

import io
import json
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

KEY_LOOKUP = re.compile(r'FROM "core_apikey"\s', re.IGNORECASE)


class ExplodingStream(io.RawIOBase):
    """A request body that fails the test if anything reads it."""

    def read(self, *args: object) -> bytes:
        raise AssertionError("the body was read before the API key was verified")

    readline = readinto = read  # type: ignore[assignment]


def post_unread_body(caller, path: str, **extra):
    body = json.dumps({"pool": "default"})
    return caller.client.generic("POST", path, data=b"", content_type="application/json",
                                 **{"CONTENT_LENGTH": str(len(body)), "wsgi.input": ExplodingStream(), **extra})


@pytest.mark.parametrize("raw_key", [None, "AbCdEfGh.unknownunknownunknownunknownun"])
def test_no_body_byte_is_read_without_a_valid_key(api_as, default_pool, raw_key):
    response = post_unread_body(api_as(raw_key), "/api/v1/reservations")
    assert response.status_code == 401 and response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Api-Key"
    assert response["Connection"] == "close"  # the unread body must not be taken for a next request


def test_chunked_body_without_a_key_is_not_read(api_as, default_pool):
    response = post_unread_body(api_as(None), "/api/v1/reservations", CONTENT_LENGTH="",
                                HTTP_TRANSFER_ENCODING="chunked")
    assert response.status_code == 401 and response["Connection"] == "close"


def test_a_revoked_key_reads_no_body_either(make_api_key, api_as, default_pool):
    _, raw = make_api_key(revoked=True)
    assert post_unread_body(api_as(raw), "/api/v1/reservations").status_code == 401


def test_a_valid_key_is_looked_up_once_per_request_not_twice(api, default_pool):
    """The guard verifies the key and the view reuses it (no second lookup)."""
    from api.auth import reset_auth_state

    reset_auth_state()  # nothing cached: this request must look the key up itself
    with CaptureQueriesContext(connection) as queries:
        assert api.post("/api/v1/reservations", {"pool": "default"}).status_code == 201
    # (Besides the process's one load of every key prefix, keys/prefixes.py, which names no key.)
    mine = [q for q in queries.captured_queries if KEY_LOOKUP.search(q["sql"]) and api.api_key.pk in q["sql"]]
    assert len(mine) == 1


def test_a_throttled_address_is_refused_before_any_key_lookup(api_as, default_pool, settings):
    """Before: every guess was still checked against the database, answered 429 instead of 401."""
    settings.API_AUTH_FAILURE_RATE_PER_MINUTE = 3
    guesses = [api_as(f"AbCdEf{n:02d}.guessguessguessguessguessguessgu") for n in range(8)]
    assert [guesses[n].get("/api/v1/pools/default").status_code for n in range(3)] == [401, 401, 401]
    for guess in guesses[3:]:
        for send in (lambda guess=guess: guess.get("/api/v1/pools/default"),
                     lambda guess=guess: guess.post("/api/v1/reservations", {"pool": "default"})):
            with CaptureQueriesContext(connection) as queries:
                response = send()
            assert response.status_code == 429 and int(response["Retry-After"]) >= 1
            lookups = [q["sql"] for q in queries.captured_queries if KEY_LOOKUP.search(q["sql"])]
            assert lookups == []
    # another address is unaffected
    assert guesses[0].get("/api/v1/pools/default", REMOTE_ADDR="10.7.7.7").status_code == 401
