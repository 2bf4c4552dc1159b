"""Which key prefixes exist, known in process memory so a failed authentication costs no database
round trip (issue 20 finding 4).

A raw key is ``<prefix>.<secret>``; the prefix is not secret. ``KnownPrefixes`` maps the prefix of
every usable key's current secret, and of its previous secret while a rotation's overlap lasts, to
the key's id and the secret's hash (SHA-512, as stored). It is reloaded (one SELECT over the active
keys) whenever the shared key generation moves (keys/keystate.py): any change to ``core_apikey``,
a new key included (keys migration 0005), reaches every process within
``API_KEY_REVOCATION_CHECK_SECONDS``. A key found by a database lookup is added at once.

What auth does with it (api/auth.py): a known prefix's secret is checked here, in memory, before
any throttle is consulted, so a key whose secret verifies is never refused because of other
clients' failures; only wrong secrets are counted, per (address, prefix); unknown prefixes are
counted per address.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from keys.keystate import KeyGenerationWatch
from keys.models import ApiKey

__all__ = ["KnownPrefixes", "PrefixEntry", "UNKNOWN_PREFIX_RECHECK_SECONDS"]

# How often a process may look early at the shared key generation because a prefix it does not
# know was presented: a key created a moment ago is known within this bound even from a throttled
# address, and a guessing loop costs at most this many generation reads per second per process.
UNKNOWN_PREFIX_RECHECK_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class PrefixEntry:
    key_id: str
    hashed_secret: str
    valid_until: datetime | None  # the end of a rotation's overlap for a previous secret

    def verifies(self, raw_key: str) -> bool:
        if self.valid_until is not None and self.valid_until <= timezone.now():
            return False
        return bool(ApiKey.objects.key_generator.verify(raw_key, self.hashed_secret))


class KnownPrefixes:
    def __init__(self, *, watch: KeyGenerationWatch | None = None) -> None:
        self._watch = watch or KeyGenerationWatch()
        self._lock = threading.Lock()
        self._entries: dict[str, PrefixEntry] | None = None

    def get(self, prefix: str) -> PrefixEntry | None:
        if self._entries is None or self._watch.changed():
            self._reload()
        entries = self._entries
        return entries.get(prefix) if entries is not None else None

    def get_fresh(self, prefix: str) -> PrefixEntry | None:
        """``get``, and for a prefix not known, one early look at the shared key generation (at most
        every ``UNKNOWN_PREFIX_RECHECK_SECONDS``): a key created since the last reload is found."""
        entry = self.get(prefix)
        if entry is None and self._watch.changed(at_most_every=UNKNOWN_PREFIX_RECHECK_SECONDS):
            self._reload()
            entry = self.get(prefix)
        return entry

    def add(self, api_key: ApiKey) -> None:
        """Remember a key just found in the database (created since the last reload)."""
        with self._lock:
            if self._entries is not None:
                self._entries.update(_entries_of(api_key.pk, api_key.prefix, api_key.hashed_key,
                                                 api_key.previous_prefix, api_key.previous_hashed_key,
                                                 api_key.previous_valid_until))

    def clear(self) -> None:
        with self._lock:
            self._entries = None
        self._watch.reset()

    def _reload(self) -> None:
        now = timezone.now()
        usable = (ApiKey.objects.filter(revoked=False).filter(Q(expiry_date__isnull=True) | Q(expiry_date__gt=now))
                  .values_list("id", "prefix", "hashed_key", "previous_prefix", "previous_hashed_key",
                               "previous_valid_until"))
        entries: dict[str, PrefixEntry] = {}
        for row in usable:
            entries.update(_entries_of(*row))
        with self._lock:
            self._entries = entries


def _entries_of(key_id: str, prefix: str, hashed_key: str, previous_prefix: str | None,
                previous_hashed_key: str | None, previous_valid_until: datetime | None) -> dict[str, PrefixEntry]:
    entries = {prefix: PrefixEntry(key_id, hashed_key, None)}
    if previous_prefix and previous_hashed_key and previous_valid_until and previous_valid_until > timezone.now():
        entries[previous_prefix] = PrefixEntry(key_id, previous_hashed_key, previous_valid_until)
    return entries
