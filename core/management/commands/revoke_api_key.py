"""Revoke a service API key by name: ``revoke_api_key NAME``. Irreversible.

Every web process stops accepting it within API_KEY_REVOCATION_CHECK_SECONDS (default 1 s) of the commit:
the shared key generation (core/api/keystate.py) empties every process's key cache."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.api.models import ApiKey


class Command(BaseCommand):
    help = "Revoke the active API key(s) with this name."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")

    def handle(self, *args: Any, name: str, **options: Any) -> None:
        keys = list(ApiKey.objects.filter(name=name, revoked=False))
        if not keys:
            raise CommandError(f"no active API key named {name!r}")
        for key in keys:
            key.revoked = True
            key.save(update_fields=["revoked"])  # save(), not update(): the cache eviction signal fires
        self.stdout.write(f"Revoked {len(keys)} API key(s) named {name!r}.")
