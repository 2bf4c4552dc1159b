"""Writes on consumers and service API keys: create, rotate, revoke (each audited as a KeyEvent),
and the last-use mark. Shared by the management commands, the admin and `make run`'s bootstrap."""
from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

from common.errors import DomainRuleViolation
from keys.models import ApiKey, Consumer, KeyEvent, KeyEventAction

__all__ = ["ApiKeyNameTaken", "api_key_create", "api_key_mark_used", "api_key_rotate", "api_keys_revoke",
           "parse_overlap"]

_DURATION = re.compile(r"(\d{1,6})([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ApiKeyNameTaken(DomainRuleViolation):
    detail = "An active API key with this name already exists."


def parse_overlap(text: str) -> timedelta:
    """``30s``, ``15m``, ``24h`` (or ``2d``) → a duration; ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 15m, 24h)")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def api_key_create(*, name: str, scopes: list[str], consumer_name: str | None = None,
                   rate_limit: int | None = None, actor: str = "") -> tuple[ApiKey, str]:
    """A new key of consumer ``consumer_name`` (default: a consumer named like the key, created if
    needed) and its raw secret, shown once. Raises ApiKeyNameTaken when an active key has this name
    (NAME is how revoke_api_key and rotate_api_key find a key); then nothing is changed."""
    with transaction.atomic():
        if ApiKey.objects.select_for_update().filter(name=name, revoked=False).exists():
            raise ApiKeyNameTaken(f"an active API key named {name!r} already exists")
        consumer = Consumer.objects.get_or_create(name=consumer_name or name)[0]
        key, raw = ApiKey.objects.create_key(name=name, scopes=scopes, consumer=consumer,
                                             rate_limit_per_second=rate_limit)
        KeyEvent.objects.create(api_key=key, action=KeyEventAction.CREATED, actor=actor,
                                detail=f"consumer {consumer.name}; scopes {','.join(scopes)}")
    return key, raw


def api_key_rotate(*, name: str, overlap: timedelta, actor: str = "") -> tuple[ApiKey, str, datetime]:
    """A new secret for the active key named ``name``; the current secret keeps working until the
    returned time, then is refused (401). Same key row: its reservations, idempotency keys, limits
    and audit trail carry on. A secret still in an earlier overlap ends now. Raises ApiKey.DoesNotExist."""
    with transaction.atomic():
        key = ApiKey.objects.select_for_update().get(name=name, revoked=False)
        valid_until = timezone.now() + overlap
        raw, prefix, hashed_key = ApiKey.objects.key_generator.generate()
        key.previous_prefix, key.previous_hashed_key = key.prefix, key.hashed_key
        key.previous_valid_until = valid_until
        key.prefix, key.hashed_key = prefix, hashed_key
        key.save(update_fields=["prefix", "hashed_key", "previous_prefix", "previous_hashed_key",
                                "previous_valid_until"])
        KeyEvent.objects.create(api_key=key, action=KeyEventAction.ROTATED, actor=actor,
                                detail=f"new prefix {prefix}; previous prefix {key.previous_prefix} "
                                       f"accepted until {valid_until.isoformat()}")
    return key, raw, valid_until


def api_keys_revoke(*, name: str | None = None, name_regex: str | None = None, actor: str = "") -> int:
    """Revoke the active keys named ``name`` (exactly) or matching ``name_regex`` (PostgreSQL regex);
    returns how many. Exactly one of the two must be given. Irreversible; both secrets of a rotated
    key stop at once.

    Each key goes through ``save()``, not a queryset ``update()``: the post_save signal evicts it from
    this process's key cache at once (api/auth.py); the ``core_apikey`` trigger moves the shared
    key generation for every other process (keys/keystate.py)."""
    if (name is None) == (name_regex is None):
        raise TypeError("api_keys_revoke takes exactly one of name= or name_regex=")
    lookup = {"name": name} if name is not None else {"name__regex": name_regex}
    with transaction.atomic():
        keys = list(ApiKey.objects.select_for_update().filter(revoked=False, **lookup))
        for key in keys:
            key.revoked = True
            key.save(update_fields=["revoked"])
        KeyEvent.objects.bulk_create([KeyEvent(api_key=key, action=KeyEventAction.REVOKED, actor=actor)
                                      for key in keys])
    return len(keys)


_MARK_EVERY_SECONDS = 60.0
_marked: dict[str, float] = {}
_marked_lock = threading.Lock()


def api_key_mark_used(*, api_key: ApiKey) -> None:
    """Record that ``api_key`` was used now, at most once a minute per key and process (one upsert)."""
    now = time.monotonic()
    with _marked_lock:
        if _marked.get(api_key.pk, 0.0) > now:
            return
        if len(_marked) > 10_000:
            _marked.clear()
        _marked[api_key.pk] = now + _MARK_EVERY_SECONDS
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO keys_apikeyusage (api_key_id, last_used_at) VALUES (%s, now()) "
                       "ON CONFLICT (api_key_id) DO UPDATE SET last_used_at = excluded.last_used_at",
                       [api_key.pk])
