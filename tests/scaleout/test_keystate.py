"""Key revocation across processes: the generation trigger counts every change to core_apikey, and
a process's key cache empties within API_KEY_REVOCATION_CHECK_SECONDS of one."""
from __future__ import annotations

import pytest
from django.db import connection

from api.auth import VerifiedKeyCache
from keys.keystate import GenerationCheckedKeyCache, KeyGenerationWatch, key_generation_read
from keys.models import ApiKey


@pytest.mark.django_db
def test_every_kind_of_change_moves_the_generation(make_api_key):
    key, _ = make_api_key()
    start = key_generation_read()
    key.revoked = True
    key.save()
    assert key_generation_read() == start + 1
    ApiKey.objects.filter(pk=key.pk).update(rate_limit_per_second=3)  # no signal fires for this one
    assert key_generation_read() == start + 2
    with connection.cursor() as cursor:
        cursor.execute("UPDATE core_apikey SET name = name || '-x' WHERE id = %s", [key.pk])
    assert key_generation_read() == start + 3
    ApiKey.objects.filter(pk=key.pk).delete()
    assert key_generation_read() == start + 4


@pytest.mark.django_db
def test_the_cache_empties_when_the_generation_moves_and_not_before(make_api_key, settings):
    settings.API_KEY_REVOCATION_CHECK_SECONDS = 0.0  # check on every get
    key, _ = make_api_key()
    cache = GenerationCheckedKeyCache(VerifiedKeyCache())
    assert cache.get("d") is None  # first check remembers the generation
    cache.put("d", key)
    assert cache.get("d") == key
    assert cache.get("d") == key
    ApiKey.objects.filter(pk=key.pk).update(revoked=True)  # as if revoked by another process
    assert cache.get("d") is None


@pytest.mark.django_db
def test_the_generation_is_read_at_most_once_per_interval(make_api_key, settings, django_assert_num_queries):
    settings.API_KEY_REVOCATION_CHECK_SECONDS = 60.0
    watch = KeyGenerationWatch()
    with django_assert_num_queries(1):
        for _ in range(100):
            assert watch.changed() is False


@pytest.mark.django_db
def test_recently_verified_survives_a_generation_change(make_api_key, settings):
    """Emptying the key cache after a change elsewhere must not make valid keys behind a throttled
    shared address look unknown (auth.py looks such keys up instead of refusing them)."""
    settings.API_KEY_REVOCATION_CHECK_SECONDS = 0.0
    key, _ = make_api_key()
    cache = GenerationCheckedKeyCache(VerifiedKeyCache())
    cache.get("d")
    cache.put("d", key)
    ApiKey.objects.filter(pk=key.pk).update(rate_limit_per_second=7)
    assert cache.get("d") is None  # the cache emptied...
    assert cache.recently_verified("d")  # ...but the digest is still known to have been valid
    assert not cache.recently_verified("other")
