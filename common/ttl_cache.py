"""The one in-process TTL cache (pool rows on the reservation path, verified API keys): cachetools'
``TLRUCache`` behind a lock, since cachetools' caches are not thread-safe and gunicorn/qcluster
threads share them."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from cachetools import TLRUCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """Bounded (least recently used goes first when full), each entry kept ``seconds()`` from when it
    was put. The lifetime is read at each put, so a setting changed at runtime (``override_settings``
    in tests) applies to the next entry; zero or less caches nothing."""

    def __init__(self, *, maxsize: int, seconds: Callable[[], float]) -> None:
        self._seconds = seconds
        self._lock = threading.Lock()
        self._cache: TLRUCache[K, V] = TLRUCache(maxsize=maxsize, ttu=self._expires, timer=time.monotonic)

    def _expires(self, key: K, value: V, now: float) -> float:
        return now + self._seconds()

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._cache.get(key)

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._cache[key] = value

    def discard(self, key: K) -> None:
        with self._lock:
            self._cache.pop(key, None)

    def discard_where(self, predicate: Callable[[K, V], bool]) -> None:
        with self._lock:
            for key in [k for k, v in self._cache.items() if predicate(k, v)]:
                self._cache.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._cache
