"""Writes on service API keys shared by the management commands and `make run`'s bootstrap."""
from __future__ import annotations

from django.db import transaction

from keys.models import ApiKey

__all__ = ["api_keys_revoke"]


def api_keys_revoke(*, name: str | None = None, name_regex: str | None = None) -> int:
    """Revoke the active keys named ``name`` (exactly) or matching ``name_regex`` (PostgreSQL regex);
    returns how many. Exactly one of the two must be given. Irreversible.

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
    return len(keys)
