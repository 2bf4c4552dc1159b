"""create_api_key --consumer and the duplicate-name refusal (contract section 1), rotate_api_key's
output and audit; the consumer data migration is covered by tests/test_migrate_from_single_app.py."""
from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from keys.models import ApiKey, Consumer, KeyEvent

pytestmark = pytest.mark.django_db


def _create(*args: str) -> str:
    out = io.StringIO()
    call_command("create_api_key", *args, stdout=out)
    return out.getvalue().strip().splitlines()[-1]


def test_the_default_consumer_is_named_like_the_key():
    _create("card-service", "--scopes", "reserve,lookup")
    key = ApiKey.objects.select_related("consumer").get(name="card-service")
    assert key.consumer.name == "card-service"
    assert KeyEvent.objects.filter(api_key=key, action="created").count() == 1


def test_keys_of_one_team_share_a_consumer():
    _create("cards-web", "--scopes", "reserve", "--consumer", "cards")
    _create("cards-batch", "--scopes", "lookup,lookup:tome", "--consumer", "cards")
    consumer = Consumer.objects.get(name="cards")
    assert sorted(consumer.api_keys.values_list("name", flat=True)) == ["cards-batch", "cards-web"]
    assert ApiKey.objects.get(name="cards-batch").scopes == ["lookup", "lookup:tome"]


def test_an_active_key_of_the_same_name_is_exit_2_and_nothing_changes():
    _create("dup", "--scopes", "lookup")
    before = (list(ApiKey.objects.values_list("pk", "name", "consumer__name", "revoked")), Consumer.objects.count())
    with pytest.raises(CommandError, match="already exists") as refused:
        call_command("create_api_key", "dup", "--scopes", "reserve", "--consumer", "other-team", stdout=io.StringIO())
    assert refused.value.returncode == 2
    assert "rotate_api_key dup" in str(refused.value) and "revoke_api_key dup" in str(refused.value)
    after = (list(ApiKey.objects.values_list("pk", "name", "consumer__name", "revoked")), Consumer.objects.count())
    assert after == before  # no second key, no consumer "other-team"


def test_rotate_prints_a_new_key_and_audits_it(make_api_key):
    key, old_raw = make_api_key(name="rotating", scopes=["lookup"])
    out = io.StringIO()
    call_command("rotate_api_key", "rotating", "--overlap", "15m", stdout=out)
    new_raw = out.getvalue().strip().splitlines()[-1]
    assert new_raw != old_raw and " " not in new_raw
    key.refresh_from_db()
    assert key.is_valid(new_raw) and key.previous_secret_valid(old_raw)
    overlap = key.previous_valid_until - KeyEvent.objects.get(action="rotated").created_at
    assert 14 * 60 < overlap.total_seconds() <= 900
    assert KeyEvent.objects.filter(api_key=key, action="rotated").exists()


@pytest.mark.parametrize("args", [["nobody"], ["rotating2", "--overlap", "soon"]])
def test_rotate_refuses_unknown_keys_and_bad_durations(make_api_key, args):
    make_api_key(name="rotating2")
    with pytest.raises(CommandError) as refused:
        call_command("rotate_api_key", *args, stdout=io.StringIO())
    assert refused.value.returncode == 2


def test_the_old_secret_works_until_the_overlap_ends_then_401(make_api_key, api_as, default_pool):
    from datetime import timedelta

    from django.utils import timezone

    key, old_raw = make_api_key(name="rotate-me", scopes=["reserve"])
    old = api_as(old_raw)
    reservation = old.post("/api/v1/reservations", {}).json()  # cached under the old secret
    out = io.StringIO()
    call_command("rotate_api_key", "rotate-me", "--overlap", "30s", stdout=out)
    new = api_as(out.getvalue().strip().splitlines()[-1])
    assert old.post("/api/v1/reservations", {}).status_code == 201
    # The same key: the new secret sees the reservations made with the old one.
    assert new.get(f"/api/v1/reservations/{reservation['reservation_id']}").status_code == 200
    ApiKey.objects.filter(pk=key.pk).update(previous_valid_until=timezone.now() - timedelta(seconds=1))
    from api.auth import reset_auth_state

    reset_auth_state()  # another process: nothing cached
    assert old.post("/api/v1/reservations", {}).status_code == 401
    assert new.post("/api/v1/reservations", {}).status_code == 201


def test_a_cached_old_secret_stops_when_the_overlap_ends(make_api_key, api_as, default_pool):
    import time

    key, old_raw = make_api_key(name="rotate-fast", scopes=["reserve"])
    old = api_as(old_raw)
    call_command("rotate_api_key", "rotate-fast", "--overlap", "1s", stdout=io.StringIO())
    assert old.post("/api/v1/reservations", {}).status_code == 201  # verified and cached now
    time.sleep(1.1)
    assert old.post("/api/v1/reservations", {}).status_code == 401
