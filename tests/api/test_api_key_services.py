"""keys/services.py: the one revocation loop behind revoke_api_key, create_api_key --key-file and
`make run`'s clean-up of old development keys."""
from __future__ import annotations

import pytest

from keys.models import ApiKey
from keys.services import api_keys_revoke


def _active() -> list[str]:
    return sorted(ApiKey.objects.filter(revoked=False).values_list("name", flat=True))


def test_revoking_by_name_takes_every_active_key_of_that_name_and_no_other(make_api_key):
    for name in ("ci", "ci", "ci-2", "other"):
        make_api_key(name=name)
    make_api_key(name="ci", revoked=True)
    assert api_keys_revoke(name="ci") == 2  # the one revoked before is not counted again
    assert _active() == ["ci-2", "other"]
    assert api_keys_revoke(name="ci") == 0


def test_revoking_by_regex_matches_the_whole_pattern(make_api_key):
    for name in ("dev-1700000000", "dev-make-run", "dev-12x"):
        make_api_key(name=name)
    assert api_keys_revoke(name_regex=r"^dev-[0-9]+$") == 1
    assert _active() == ["dev-12x", "dev-make-run"]


def test_a_revoked_key_is_refused_at_once_in_this_process(api, default_pool):
    assert api.post("/api/v1/reservations", {}).status_code == 201  # verified, now cached
    assert api_keys_revoke(name=api.api_key.name) == 1
    assert api.post("/api/v1/reservations", {}).status_code == 401


@pytest.mark.parametrize("kwargs", [{}, {"name": "a", "name_regex": "^a$"}])
def test_exactly_one_selector_is_required(db, kwargs):
    with pytest.raises(TypeError):
        api_keys_revoke(**kwargs)
