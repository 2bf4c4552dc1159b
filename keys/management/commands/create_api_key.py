"""Create a scoped service API key: ``create_api_key NAME --scopes reserve,lookup [--rate-limit N]``.

The raw key is printed once, alone on the last line of stdout (scripts take ``tail -n 1``); only
its hash is stored.

``--key-file PATH`` (what `make run` uses for its development key): the raw key goes to PATH
(mode 0600) instead of stdout, and the command is idempotent — while PATH holds a valid, active key
named NAME with exactly these scopes, nothing changes; otherwise the active keys named NAME are
revoked and a new one is written. Only the path is printed."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from keys.models import ApiKey, ApiScope
from keys.services import ApiKeyNameTaken, api_key_create, api_keys_revoke

ACTOR = "manage.py create_api_key"


class Command(BaseCommand):
    help = "Create a scoped API key and print the raw key on the last line of stdout."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Identifies the key (unique among active keys, ≤50 characters).")
        parser.add_argument("--scopes", required=True,
                            help=f"Comma-separated subset of: {', '.join(s.value for s in ApiScope)}.")
        parser.add_argument("--consumer", default=None,
                            help="The consuming team or service the key belongs to (default: NAME).")
        parser.add_argument("--rate-limit", type=int, default=None, dest="rate_limit",
                            help="Units per second for this key: a request costs 1, a batch its item count "
                                 "(default: API_THROTTLE_RATE_PER_SECOND).")
        parser.add_argument("--key-file", default=None, dest="key_file",
                            help="Keep the key in this file (0600) instead of printing it; reuse it while valid.")

    def handle(self, *args: Any, name: str, scopes: str, rate_limit: int | None, key_file: str | None = None,
               consumer: str | None = None, **options: Any) -> None:
        wanted = [s.strip() for s in scopes.split(",") if s.strip()]
        known = {s.value for s in ApiScope}
        unknown = sorted(set(wanted) - known)
        if not wanted or unknown:
            raise CommandError(f"unknown or missing scopes {unknown or '(none given)'}; choose from {sorted(known)}",
                               returncode=2)
        if not 1 <= len(name) <= 50:
            raise CommandError("name must be 1 to 50 characters", returncode=2)
        if consumer is not None and not 1 <= len(consumer.strip()) <= 50:
            raise CommandError("--consumer must be 1 to 50 characters", returncode=2)
        if rate_limit is not None and rate_limit < 1:
            raise CommandError("--rate-limit must be at least 1", returncode=2)
        if key_file:
            self._ensure_key_file(Path(key_file), name=name, scopes=list(dict.fromkeys(wanted)),
                                  rate_limit=rate_limit)
            return
        # NAME is how revoke_api_key and rotate_api_key find the key, so it must identify one active key.
        try:
            key, raw = api_key_create(name=name, scopes=list(dict.fromkeys(wanted)),
                                      consumer_name=consumer.strip() if consumer else None, rate_limit=rate_limit,
                                      actor=ACTOR)
        except ApiKeyNameTaken as exc:
            raise CommandError(f"{exc.detail} (its secret was shown once, when it was created). Keep using that "
                               f"secret, or get a new one for the same key: manage.py rotate_api_key {name}; or "
                               f"manage.py revoke_api_key {name}, then create it again", returncode=2) from None
        self.stdout.write(f"Created API key {name!r} for consumer {key.consumer.name!r} (prefix {key.prefix}, "
                          f"scopes {','.join(key.scopes)}). Store it now; it is not shown again:")
        self.stdout.write(raw)

    def _ensure_key_file(self, path: Path, *, name: str, scopes: list[str], rate_limit: int | None) -> None:
        raw = path.read_text().strip() if path.exists() else ""
        if raw:
            try:
                key = ApiKey.objects.get_from_key(raw)  # active (not revoked) and the hash matches
            except ApiKey.DoesNotExist:
                key = None
            if (key is not None and not key.has_expired and key.name == name and sorted(key.scopes) == sorted(scopes)
                    and key.rate_limit_per_second == rate_limit):
                self.stdout.write(f"API key {name!r} (prefix {key.prefix}) kept in {path}")
                self.stdout.write(str(path))
                return
        with transaction.atomic():
            stale = api_keys_revoke(name=name, actor=ACTOR)
            key, raw = api_key_create(name=name, scopes=scopes, rate_limit=rate_limit, actor=ACTOR)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written beside, then renamed: a reader never sees half a key, and the mode is 0600 from creation.
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(raw + "\n")
        os.replace(temporary, path)
        replaced = f", revoked {stale} older" if stale else ""
        self.stdout.write(f"Created API key {name!r} (prefix {key.prefix}, scopes {','.join(key.scopes)}{replaced}); "
                          f"the key is in {path}")
        self.stdout.write(str(path))
