"""The auth matrix's issue-20 columns over every /api/v1/ endpoint (tests/pool/test_auth.py has no
key, wrong secret, revoked and wrong scope): a rotated-out secret, another consumer's resource,
and the ``:any`` and ``:tome`` grants."""
from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from keys.models import ApiKey
from tests.pool.test_auth import ENDPOINTS, assert_code, call

pytestmark = pytest.mark.django_db

IDS = [f"{m} {p}" for m, p, _, _ in ENDPOINTS]
GRANTS = {"lookup": ["lookup:any", "lookup:tome"], "detokenize": ["detokenize:any", "detokenize:tome"]}


@pytest.fixture
def owned(make_api_key, api_as, default_pool):
    """A confirmed reservation of consumer A: what each endpoint is asked about."""
    _key, raw = make_api_key(name="team-a", scopes=["reserve"])
    body = api_as(raw).post("/api/v1/reservations", {}).json()
    api_as(raw).post(f"/api/v1/reservations/{body['reservation_id']}/confirm")
    return body


def aimed_at(owned, path, body):
    """The endpoint's path and body pointed at consumer A's reservation / pair."""
    rid = owned["reservation_id"]
    path = path.replace("00000000-0000-4000-8000-000000000000", rid)
    if body is None or not isinstance(body, dict):
        return path, body
    replaced = {"internal_token": owned["internal_token"], "external_ref_id": owned["external_ref_id"],
                "internal_tokens": [owned["internal_token"]], "external_ref_ids": [owned["external_ref_id"]],
                "reservation_ids": [rid]}
    return path, {k: replaced.get(k, v) for k, v in body.items()}


@pytest.mark.parametrize("method,path,body,scope", ENDPOINTS, ids=IDS)
class TestAuthMatrixConsumers:
    def test_rotated_out_secret_is_401_and_the_new_one_works(self, api_as, make_api_key, default_pool, tome,
                                                            method, path, body, scope):
        key, old = make_api_key(name="rotated", scopes=[scope])
        out = io.StringIO()
        call_command("rotate_api_key", "rotated", "--overlap", "30s", stdout=out)
        new = out.getvalue().strip().splitlines()[-1]
        assert call(api_as(old), method, path, body).status_code not in (401, 403)  # within the overlap
        ApiKey.objects.filter(pk=key.pk).update(previous_valid_until=timezone.now() - timedelta(seconds=1))
        from api.auth import reset_auth_state

        reset_auth_state()
        assert_code(call(api_as(old), method, path, body), 401, "not_authenticated")
        assert call(api_as(new), method, path, body).status_code not in (401, 403)

    def test_another_consumer_sees_nothing_of_consumer_a(self, api_as, make_api_key, owned, tome,
                                                       method, path, body, scope):
        _key, raw = make_api_key(name="team-b", scopes=[scope])
        response = call(api_as(raw), method, *aimed_at(owned, path, body))
        if path.endswith("/batch") and scope in GRANTS:  # per item, as an unknown token
            assert response.status_code == 200
            assert [r.get("code") for r in response.json()["results"]] == ["not_found"]
        elif scope in GRANTS or "{" in path or "00000000" in path:
            assert_code(response, 404, "not_found")
        elif path.endswith("/confirm/batch") or path.endswith("/release/batch"):
            assert [r.get("code") for r in response.json()["results"]] == ["not_found"]
        else:  # creating reservations, pool health: nothing of A's is involved
            assert response.status_code in (200, 201)
        assert tome.calls("ns2", "lookup") + tome.calls("ns2", "detokenize") == 0

    def test_the_any_grant(self, api_as, make_api_key, owned, tome, method, path, body, scope):
        if scope not in GRANTS:  # a grant is no scope of its own: alone it opens nothing
            _key, raw = make_api_key(scopes=["lookup:any", "detokenize:any"])
            assert_code(call(api_as(raw), method, path, body), 403, "permission_denied")
            return
        _key, raw = make_api_key(name="auditor", scopes=[scope, f"{scope}:any"])
        response = call(api_as(raw), method, *aimed_at(owned, path, body))
        assert response.status_code == 200
        item = response.json()["results"][0] if path.endswith("/batch") else response.json()
        assert item["source"] == "pool" and item["external_ref_id"] == owned["external_ref_id"]

    def test_the_tome_grant(self, api_as, make_api_key, owned, tome, method, path, body, scope):
        if scope not in GRANTS:
            _key, raw = make_api_key(scopes=["lookup:tome", "detokenize:tome"])
            assert_code(call(api_as(raw), method, path, body), 403, "permission_denied")
            return
        from tome.provider import get_tome_client

        legacy = get_tome_client().generate_pairs(1)[0]
        legacy_body = {"internal_token": legacy.internal_token, "external_ref_id": legacy.external_ref_id,
                       "internal_tokens": [legacy.internal_token], "external_ref_ids": [legacy.external_ref_id]}
        request = {k: legacy_body[k] for k in body}
        _key, plain = make_api_key(scopes=[scope])
        refused = call(api_as(plain), method, path, request)
        _key, raw = make_api_key(scopes=[scope, f"{scope}:tome"])
        response = call(api_as(raw), method, path, request)
        assert response.status_code == 200
        item = response.json()["results"][0] if path.endswith("/batch") else response.json()
        assert item["source"] == "tome"
        if path.endswith("/batch"):
            assert refused.json()["results"][0]["code"] == "not_found"
        else:
            assert_code(refused, 404, "not_found")
        # :tome is not :any: consumer A's pair stays hidden.
        hidden = call(api_as(raw), method, *aimed_at(owned, path, body))
        assert hidden.status_code == 404 or hidden.json()["results"][0]["code"] == "not_found"
