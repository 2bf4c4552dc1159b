"""The deployment's rate limiter: a backend chosen by settings, with leases over a shared store.

``SharedLimiter`` picks the backend of ``keys.limits`` per call (``settings.SHARED_LIMITS_BACKEND``);
on a shared store ``LeasedLimiter`` takes tokens a few at a time so that most decisions need no
round trip, while the deployment as a whole still never exceeds the limit (contract §1).
"""
from __future__ import annotations

import threading
import time

from django.conf import settings

from keys.limits import LocalLimiter, PostgresLimiter, RateLimiter, RedisLimiter

__all__ = [
    "LeasedLimiter",
    "SharedLimiter",
    "lease_size_limit",
    "limiter_for",
]

# --- Leases: most decisions without a round trip ----------------------------------------------------
LEASE_SECONDS = 0.2  # a lease's unused tokens are dropped after this: a process does not hoard them
LEASE_MAX = 50
FETCH_WAIT_SECONDS = 1.0  # longest a request waits for another thread's lease fetch before its own
LEASE_RATE_DIVISOR = 20  # largest lease = rate / 20 (1/20 s of the allowance): a key of <= 20/s stays exact


def lease_size_limit(*, rate: float, per: float) -> int:
    """The largest lease for ``rate`` events per ``per`` seconds: 1 (exact) up to 20/s, then
    rate/20 per second's worth, at most LEASE_MAX."""
    return int(min(max(1.0, rate / per / LEASE_RATE_DIVISOR), LEASE_MAX))


class _Lease:
    __slots__ = ("expires", "fetching", "left", "refused_until", "size", "used")

    def __init__(self) -> None:
        self.fetching = False  # a thread of this process is fetching the next lease from the store
        self.left = 0
        self.expires = 0.0
        self.size = 1
        self.used = 0
        self.refused_until = 0.0

    def start_fetch(self, *, limit: int, now: float) -> int:
        """Mark the next lease as being fetched; its size (called with the limiter's lock held)."""
        # The last lease is used up or expired: size the next one on what it saw (doubled
        # only when it ran out within its lifetime: demand is at least that).
        if self.left == 0 and self.used and self.expires > now:
            self.size = min(limit, self.size * 2)
        else:
            self.size = max(1, min(limit, self.used))
        self.left, self.used = 0, 0
        self.fetching = True
        return self.size

    def settle(self, *, granted: int, wait: float, now: float) -> None:
        """Record the store's answer to a fetch (called with the limiter's lock held)."""
        if not granted:
            self.refused_until = now + wait
            return
        # Tokens another thread leased meanwhile are kept: both leases were counted as spent.
        self.left = (self.left if self.expires > now else 0) + granted - 1
        self.used += 1
        self.expires = now + LEASE_SECONDS


class LeasedLimiter:
    """A shared limiter whose tokens a process takes a few at a time (contract §1 still holds).

    Each round trip to the shared store takes a lease of up to ``lease_size_limit`` tokens, counted
    there as spent at once, so the whole deployment never gets more than the limit; this process
    then serves requests from the lease until it is used up or ``LEASE_SECONDS`` old (unused tokens
    are dropped, never given back: the error is only ever on the strict side). The lease grows by
    doubling while leases get used up and falls back to what was used when one expires, so a
    process that sees few requests takes one token at a time and wastes nothing of a shared key.
    A refusal is remembered until the wait it named has passed (the store's tat never moves back),
    so a throttled key costs no round trips either. ``peek`` goes to the store as is."""

    def __init__(self, inner: RateLimiter) -> None:
        self.inner = inner
        self.namespace = getattr(inner, "namespace", "")
        self._lock = threading.Lock()
        self._fetched = threading.Condition(self._lock)
        self._leases: dict[tuple[str, float, float], _Lease] = {}

    def take(self, name: str, *, rate: float, per: float = 1.0, peek: bool = False) -> float:
        limit = lease_size_limit(rate=rate, per=per)
        if peek or limit == 1:
            return self.inner.take(name, rate=rate, per=per, peek=peek)
        key = (name, rate, per)
        now = time.monotonic()
        wait_until = now + FETCH_WAIT_SECONDS
        with self._lock:
            while True:
                lease = self._lease_for(key)
                if lease.refused_until > now:
                    return lease.refused_until - now
                if lease.left > 0 and lease.expires > now:
                    lease.left -= 1
                    lease.used += 1
                    return 0.0
                # Single flight: while one thread of this process fetches the key's next lease, the
                # others wait for it instead of each paying a round trip of their own (with N threads
                # the store would otherwise see up to N requests per lease, and each costs the request
                # that makes it a round trip). A fetch slower than FETCH_WAIT_SECONDS is not waited for.
                if not lease.fetching or now >= wait_until:
                    break
                self._fetched.wait(timeout=wait_until - now)
                now = time.monotonic()
            want = lease.start_fetch(limit=limit, now=now)
        # The round trip outside the lock: other threads of this process go on meanwhile. Whether it
        # answers or raises, the waiting threads are released in the same lock section.
        outcome = None
        try:
            outcome = granted, wait = self.inner.take_many(name, rate=rate, per=per, want=want)
        finally:
            now = time.monotonic()
            with self._lock:
                lease.fetching = False
                self._fetched.notify_all()
                if outcome is not None:
                    lease.settle(granted=granted, wait=wait, now=now)
        return 0.0 if granted else wait

    def _lease_for(self, key: tuple[str, float, float]) -> _Lease:
        """The key's lease, created empty if there is none (called with the lock held)."""
        lease = self._leases.get(key)
        if lease is None:
            if len(self._leases) > 10_000:  # many keys: drop the leases (strict side)
                self._leases.clear()
            lease = self._leases[key] = _Lease()
        return lease

    def take_many(self, name: str, *, rate: float, per: float = 1.0, want: int) -> tuple[int, float]:
        return self.inner.take_many(name, rate=rate, per=per, want=want)

    def reset(self) -> None:
        with self._lock:
            self._leases.clear()
        self.inner.reset()


_BACKENDS = {"redis": RedisLimiter, "postgres": PostgresLimiter, "local": LocalLimiter}


def limiter_for(namespace: str, *, backend: str) -> RateLimiter:
    try:
        return _BACKENDS[backend](namespace)
    except KeyError:
        raise ValueError(f"unknown SHARED_LIMITS_BACKEND {backend!r} (redis, postgres or local)") from None


class SharedLimiter:
    """The deployment's limiter for one namespace, chosen per call by
    ``settings.SHARED_LIMITS_BACKEND``: ``redis`` (the default when ``REDIS_URL`` is set),
    ``postgres`` (the default otherwise) or ``local`` (per process; single-process use only).
    On a shared store the decisions go through ``LeasedLimiter`` (exact up to 20 events/s, where
    every decision is a round trip, so the failed-authentication limits are unchanged)."""

    def __init__(self, namespace: str, *, leased: bool = True) -> None:
        self.namespace = namespace
        self.leased = leased
        self._instances: dict[str, RateLimiter] = {}

    def backend(self) -> RateLimiter:
        name = settings.SHARED_LIMITS_BACKEND
        instance = self._instances.get(name)
        if instance is None:
            made = limiter_for(self.namespace, backend=name)
            if self.leased and name != "local":  # leases only save round trips to a shared store
                made = LeasedLimiter(made)
            instance = self._instances.setdefault(name, made)
        return instance

    def take(self, name: str, *, rate: float, per: float = 1.0, peek: bool = False) -> float:
        return self.backend().take(name, rate=rate, per=per, peek=peek)

    def reset(self) -> None:
        for instance in list(self._instances.values()):
            instance.reset()
