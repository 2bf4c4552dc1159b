"""Key revocation seen by every process within the contract's 5 seconds, whatever the cache TTL.

Each process caches verified keys (api/auth.py). PostgreSQL keeps one shared number, the key
generation (table ``core_apikey_generation``, migration 0011), which a statement-level trigger on
``core_apikey`` increments on every UPDATE, DELETE or TRUNCATE — in the same transaction as the
change, whoever makes it: the admin, ``revoke_api_key``, a queryset ``update()`` or plain SQL. A
process compares the number with the one it cached under at most every
``API_KEY_REVOCATION_CHECK_SECONDS`` (default 1 s) and drops its whole key cache when it moved, so
a revoked key is refused everywhere within that interval plus one request; creating a key changes
nothing (unknown keys are never cached).

The generation lives in PostgreSQL with or without Redis: keys live there, and the trigger is what
makes "every change counts" true without trusting every writer to remember a second store. Cost:
one primary-key SELECT per process per check interval, not per request.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from django.conf import settings
from django.db import connection

__all__ = ["KeyGenerationWatch", "GenerationCheckedKeyCache", "key_generation_read"]


def key_generation_read() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT generation FROM core_apikey_generation WHERE id = 1")
        row = cursor.fetchone()
    return row[0] if row else 0


class KeyGenerationWatch:
    """``changed()`` is True once each time the shared generation moved since the last check."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: int | None = None
        self._next_check = 0.0

    def changed(self, *, at_most_every: float | None = None) -> bool:
        """``at_most_every``: check now unless the last check is younger than this many seconds
        (instead of ``API_KEY_REVOCATION_CHECK_SECONDS``): a bounded early look for a key that may
        have been created a moment ago."""
        now = time.monotonic()
        interval = settings.API_KEY_REVOCATION_CHECK_SECONDS
        due = self._next_check if at_most_every is None else self._next_check - interval + at_most_every
        if now < due:
            return False
        with self._lock:
            due = self._next_check if at_most_every is None else self._next_check - interval + at_most_every
            if now < due:  # another thread just checked
                return False
            generation = key_generation_read()
            self._next_check = time.monotonic() + interval
            moved = self._seen is not None and generation != self._seen
            self._seen = generation
            return moved

    def reset(self) -> None:
        with self._lock:
            self._seen = None
            self._next_check = 0.0


class GenerationCheckedKeyCache:
    """A per-process verified-key cache (api/auth.py's ``KeyCache``) that drops its verified
    keys when the shared key generation moves: whatever the cache TTL, a key revoked, expired or
    re-scoped in any process is dropped here within ``API_KEY_REVOCATION_CHECK_SECONDS``. The
    "recently verified" digests stay (``forget_verified``): emptying the key cache must not lock
    valid keys behind a throttled shared address out (auth.py's guarantee)."""

    def __init__(self, inner: Any, *, watch: KeyGenerationWatch | None = None) -> None:
        self.inner = inner
        self.watch = watch or KeyGenerationWatch()

    def get(self, digest: str):
        if self.watch.changed():
            self.inner.forget_verified()
        return self.inner.get(digest)

    def put(self, digest: str, api_key) -> None:
        self.inner.put(digest, api_key)

    def recently_verified(self, digest: str) -> bool:
        return self.inner.recently_verified(digest)

    def evict(self, key_id: str) -> None:
        self.inner.evict(key_id)

    def forget_verified(self) -> None:
        self.inner.forget_verified()

    def clear(self) -> None:
        self.inner.clear()
        self.watch.reset()
