"""Revoke a service API key by name: ``revoke_api_key NAME``. Irreversible.

Every web process stops accepting it within API_KEY_REVOCATION_CHECK_SECONDS (default 1 s) of the commit:
the shared key generation (keys/keystate.py) empties every process's key cache."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from keys.services import api_keys_revoke


class Command(BaseCommand):
    help = "Revoke the active API key(s) with this name."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")

    def handle(self, *args: Any, name: str, **options: Any) -> None:
        revoked = api_keys_revoke(name=name, actor="manage.py revoke_api_key")
        if not revoked:
            raise CommandError(f"no active API key named {name!r}")
        self.stdout.write(f"Revoked {revoked} API key(s) named {name!r}.")
