"""Failed-authentication limits that never lock out a valid key (issue 20 finding 4; contract
section 2): failures count per (address, key prefix) and per address for unknown prefixes; a key
whose secret verifies is never refused because of others' failures; a throttled guess costs no
database round trip. And per-key limits count items: a batch of N costs N."""
from __future__ import annotations

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from keys.prefixes import UNKNOWN_PREFIX_RECHECK_SECONDS

pytestmark = pytest.mark.django_db
GENERATION_READ = "core_apikey_generation"

ALL = ["reserve", "lookup", "detokenize", "pools:read"]


def _flood(api_as, raw_keys, times=5):
    for _ in range(times):
        for raw in raw_keys:
            api_as(raw).get("/api/v1/pools/default")


def test_a_valid_key_is_never_refused_while_its_address_floods(make_api_key, api_as, default_pool, settings):
    settings.API_AUTH_FAILURE_RATE_PER_MINUTE = 3
    key, raw = make_api_key(scopes=ALL, name="long-used")
    assert api_as(raw).get("/api/v1/pools/default").status_code == 200
    prefix = key.prefix
    # Unknown prefixes, and wrong secrets for the valid key's own prefix, from the same address.
    _flood(api_as, ["ZzZzZzZz.guess", f"{prefix}.wrongsecretwrongsecretwrongsecret"])
    assert api_as("ZzZzZzZz.guess").get("/api/v1/pools/default").status_code == 429
    assert api_as(f"{prefix}.wrongsecret").get("/api/v1/pools/default").status_code == 429
    from api.auth import reset_auth_state

    # A web worker restarts (nothing cached; before: 429 on 14 of 20), and the flood goes on.
    reset_auth_state()
    _flood(api_as, ["ZzZzZzZz.guess", f"{prefix}.wrongsecretwrongsecretwrongsecret"])
    statuses = []
    for _ in range(20):
        statuses.append(api_as(raw).get("/api/v1/pools/default").status_code)
        _flood(api_as, ["ZzZzZzZz.guess"], times=1)
    assert statuses == [200] * 20


def test_a_throttled_guess_costs_no_database_round_trip(api_as, make_api_key, default_pool, settings):
    settings.API_AUTH_FAILURE_RATE_PER_MINUTE = 3
    settings.SHARED_LIMITS_BACKEND = "postgres"  # the limiter's own store is the database too
    key, _raw = make_api_key(scopes=ALL)
    guesses = ["QqQqQqQq.guess", f"{key.prefix}.wrongsecretwrongsecretwrongsecret"]
    _flood(api_as, guesses, times=4)  # now throttled, both buckets
    for raw in guesses:
        started = time.monotonic()
        with CaptureQueriesContext(connection) as queries:
            statuses = [api_as(raw).get("/api/v1/pools/default").status_code for _ in range(20)]
        elapsed = time.monotonic() - started
        assert statuses == [429] * 20
        # No key lookup, no core_ratelimit: at most the bounded early look at the key generation
        # that lets a key created a moment ago in (keys/prefixes.py), never one per guess.
        reads = [q["sql"] for q in queries.captured_queries]
        assert all(GENERATION_READ in sql for sql in reads), reads
        assert len(reads) <= 1 + elapsed / UNKNOWN_PREFIX_RECHECK_SECONDS


def test_a_key_created_a_moment_ago_is_not_refused_at_a_throttled_address(make_api_key, api_as, default_pool,
                                                                           settings):
    """Before: a key created since this process last loaded the prefixes was refused with 429 for up
    to API_KEY_REVOCATION_CHECK_SECONDS while its address was throttled for unknown prefixes."""
    settings.API_AUTH_FAILURE_RATE_PER_MINUTE = 3
    settings.API_KEY_REVOCATION_CHECK_SECONDS = 3600  # no regular reload during the test
    _flood(api_as, ["WwWwWwWw.guess"])  # the prefixes are loaded and this address is throttled
    assert api_as("WwWwWwWw.guess").get("/api/v1/pools/default").status_code == 429
    time.sleep(UNKNOWN_PREFIX_RECHECK_SECONDS)
    _key, raw = make_api_key(scopes=ALL, name="brand-new")
    statuses = [api_as(raw).get("/api/v1/pools/default").status_code for _ in range(5)]
    assert statuses == [200] * 5
    assert api_as("WwWwWwWw.guess").get("/api/v1/pools/default").status_code == 429


def test_failures_of_one_prefix_do_not_throttle_another_prefix_or_address(make_api_key, api_as, default_pool,
                                                                          settings):
    settings.API_AUTH_FAILURE_RATE_PER_MINUTE = 3
    key_a, _ = make_api_key(scopes=ALL)
    key_b, _ = make_api_key(scopes=ALL)
    _flood(api_as, [f"{key_a.prefix}.wrongsecretwrongsecretwrongsecret"])
    assert api_as(f"{key_a.prefix}.wrong").get("/api/v1/pools/default").status_code == 429
    assert api_as(f"{key_b.prefix}.wrong").get("/api/v1/pools/default").status_code == 401
    assert api_as(f"{key_a.prefix}.wrong").get("/api/v1/pools/default", REMOTE_ADDR="10.9.9.9").status_code == 401


def test_a_batch_costs_its_item_count(make_api_key, api_as, default_pool, tome):
    _key, raw = make_api_key(scopes=["lookup"], rate_limit=10)
    caller = api_as(raw)
    response = caller.post("/api/v1/lookup/batch", {"internal_tokens": [f"{i:016d}" for i in range(10)]})
    assert response.status_code == 200  # ten units: the whole second's allowance
    response = caller.post("/api/v1/lookup", {"internal_token": "0000000000000001"})
    assert response.status_code == 429 and response.json()["code"] == "throttled"  # before: 200


def test_a_batch_larger_than_the_allowance_is_not_impossible(make_api_key, api_as, default_pool, tome):
    _key, raw = make_api_key(scopes=["lookup"], rate_limit=5)
    response = api_as(raw).post("/api/v1/lookup/batch", {"internal_tokens": [f"{i:016d}" for i in range(50)]})
    assert response.status_code == 200
