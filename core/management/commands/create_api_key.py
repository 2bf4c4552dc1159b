"""Create a scoped service API key: ``create_api_key NAME --scopes reserve,lookup [--rate-limit N]``.

The raw key is printed once, alone on the last line of stdout (scripts take ``tail -n 1``); only
its hash is stored."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.api.models import ApiKey, ApiScope


class Command(BaseCommand):
    help = "Create a scoped API key and print the raw key on the last line of stdout."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Identifies the key (unique among active keys, ≤50 characters).")
        parser.add_argument("--scopes", required=True,
                            help=f"Comma-separated subset of: {', '.join(s.value for s in ApiScope)}.")
        parser.add_argument("--rate-limit", type=int, default=None, dest="rate_limit",
                            help="Requests per second for this key (default: API_THROTTLE_RATE_PER_SECOND).")

    def handle(self, *args: Any, name: str, scopes: str, rate_limit: int | None, **options: Any) -> None:
        wanted = [s.strip() for s in scopes.split(",") if s.strip()]
        known = {s.value for s in ApiScope}
        unknown = sorted(set(wanted) - known)
        if not wanted or unknown:
            raise CommandError(f"unknown or missing scopes {unknown or '(none given)'}; choose from {sorted(known)}")
        if not 1 <= len(name) <= 50:
            raise CommandError("name must be 1 to 50 characters")
        if rate_limit is not None and rate_limit < 1:
            raise CommandError("--rate-limit must be at least 1")
        # NAME is how revoke_api_key finds the key, so it must identify one active key.
        if ApiKey.objects.filter(name=name, revoked=False).exists():
            raise CommandError(f"an active API key named {name!r} already exists")
        key, raw = ApiKey.objects.create_key(name=name, scopes=list(dict.fromkeys(wanted)),
                                             rate_limit_per_second=rate_limit)
        self.stdout.write(f"Created API key {name!r} (prefix {key.prefix}, scopes {','.join(key.scopes)}). "
                          "Store it now; it is not shown again:")
        self.stdout.write(raw)
