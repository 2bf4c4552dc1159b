"""Rotate a service API key without downtime: ``rotate_api_key NAME [--overlap 24h]``.

Prints the new raw key alone on the last line of stdout (shown once, stored hashed). The old
secret keeps working until the overlap ends (``30s``, ``15m``, ``24h``; default 24h), then every
process refuses it (401). The key keeps its consumer, scopes, reservations and audit trail; the
rotation is recorded as a key event."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from keys.models import ApiKey
from keys.services import api_key_rotate, parse_overlap


class Command(BaseCommand):
    help = "Give an API key a new secret; the old one keeps working for --overlap (default 24h)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--overlap", default="24h",
                            help="How long the old secret keeps working: 30s, 15m, 24h (default 24h).")

    def handle(self, *args: Any, name: str, overlap: str, **options: Any) -> None:
        try:
            duration = parse_overlap(overlap)
        except ValueError as exc:
            raise CommandError(str(exc), returncode=2) from None
        try:
            key, raw, valid_until = api_key_rotate(name=name, overlap=duration, actor="manage.py rotate_api_key")
        except ApiKey.DoesNotExist:
            raise CommandError(f"no active API key named {name!r}", returncode=2) from None
        self.stdout.write(f"Rotated API key {name!r} (new prefix {key.prefix}); the old secret works until "
                          f"{valid_until.isoformat()}. Store the new key now; it is not shown again:")
        self.stdout.write(raw)
