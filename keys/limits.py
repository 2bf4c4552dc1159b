"""Rate limits shared by every process and machine of a deployment (contract §1 and the 429 of §2).

One algorithm, GCRA (the generic cell rate algorithm, a token bucket written as one number): each
limited name keeps a "theoretical arrival time" ``tat``. With ``rate`` events per ``per`` seconds
the emission interval is ``T = per / rate`` and the burst tolerance ``tau = (burst - 1) * T`` with
``burst = max(1, rate)`` (the old per-process bucket's capacity). A request at ``now`` passes when
``max(tat, now) - now <= tau`` and then moves ``tat`` on by ``T``; otherwise it waits
``max(tat, now) - now - tau`` seconds. No request history is kept: one row or key per name.

Each decision is ONE atomic round trip to the shared store, whose clock is the only clock used
(machines with skewed clocks still agree):

- PostgreSQL (default, no extra service): the UNLOGGED table ``core_ratelimit`` (migration 0011),
  one ``INSERT … ON CONFLICT DO UPDATE … RETURNING``. UNLOGGED: no WAL, so the commit needs no
  flush; a crash empties the table, which only forgives the limits for a moment.
- Redis (``REDIS_URL`` set): a Lua script run by the cache's own redis client (Django's
  ``RedisCache``), with the key expiring when it no longer matters.

A Redis outage degrades to this process's own buckets (logged) instead of refusing every request:
the database still answers, and a limiter must not become the reason the API is down.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

import redis
from django.core.cache import caches
from django.db import connection

__all__ = [
    "LocalLimiter",
    "PostgresLimiter",
    "RateLimiter",
    "RedisLimiter",
    "gcra_parameters",
]

logger = logging.getLogger("tokenpool.api")


def gcra_parameters(*, rate: float, per: float) -> tuple[float, float]:
    """(emission interval T, burst tolerance tau) for ``rate`` events per ``per`` seconds."""
    if rate <= 0 or per <= 0:
        raise ValueError("rate and per must be positive")
    interval = per / rate
    return interval, (max(1.0, rate) - 1.0) * interval


class RateLimiter(Protocol):
    def take(self, name: str, *, rate: float, per: float = 1.0, peek: bool = False) -> float:
        """0.0 if the event may happen now (and it is counted, unless ``peek``), else the seconds
        until it may."""

    def take_many(self, name: str, *, rate: float, per: float = 1.0, want: int) -> tuple[int, float]:
        """Up to ``want`` events at once: (how many were counted, 0.0) or, when not even one may
        happen now, (0, seconds until one may)."""

    def reset(self) -> None:
        """Forget every name of this limiter (tests)."""


class LocalLimiter:
    """GCRA in this process only: the fallback while Redis is unreachable, and ``local`` backend."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._lock = threading.Lock()
        self._tat: dict[str, float] = {}

    def take(self, name: str, *, rate: float, per: float = 1.0, peek: bool = False) -> float:
        if not peek:
            return self.take_many(name, rate=rate, per=per, want=1)[1]
        _interval, tau = gcra_parameters(rate=rate, per=per)
        now = time.monotonic()
        with self._lock:
            return max(self._tat.get(name, now) - now - tau, 0.0)

    def take_many(self, name: str, *, rate: float, per: float = 1.0, want: int) -> tuple[int, float]:
        interval, tau = gcra_parameters(rate=rate, per=per)
        now = time.monotonic()
        with self._lock:
            tat = max(self._tat.get(name, now), now)
            granted = _grantable(ahead=tat - now, interval=interval, tau=tau, want=want)
            if not granted:
                return 0, tat - now - tau
            if len(self._tat) > 100_000:  # addresses of a scan: bound the memory, forgive them all
                self._tat.clear()
            self._tat[name] = tat + granted * interval
            return granted, 0.0

    def reset(self) -> None:
        with self._lock:
            self._tat.clear()


def _grantable(*, ahead: float, interval: float, tau: float, want: int) -> int:
    """How many of ``want`` events GCRA allows at once when the bucket is ``ahead`` seconds ahead:
    the k-th passes when ahead + (k - 1) * T <= tau (the 1e-9 absorbs float error in k * T)."""
    if ahead > tau:
        return 0
    return max(1, min(want, int((tau - ahead) / interval + 1e-9) + 1))


# Up to %(want)s events in one statement (one for ``take``, a lease for ``LeasedLimiter``).
# ``checked_at`` is the database's clock (clock_timestamp(), not now(): inside a caller's
# transaction now() stands still); the row lock taken by ON CONFLICT serialises concurrent
# decisions on one name across every connection. ``checked_at`` is then set to
# where the granted span starts (the later of tat and the clock), so RETURNING can say how many
# were granted without PostgreSQL 18's OLD: (tat - checked_at) / T when allowed; when refused,
# checked_at is the clock and tat - checked_at how far ahead the bucket is.
_PG_TAKE_MANY = """
INSERT INTO core_ratelimit AS r (bucket, tat, checked_at, allowed)
SELECT %(bucket)s, c.now + %(first)s * %(interval)s, c.now, true
  FROM (SELECT extract(epoch FROM clock_timestamp())::float8 AS now) AS c
ON CONFLICT (bucket) DO UPDATE SET
    allowed = GREATEST(r.tat, EXCLUDED.checked_at) - EXCLUDED.checked_at <= %(tau)s,
    tat = CASE WHEN GREATEST(r.tat, EXCLUDED.checked_at) - EXCLUDED.checked_at <= %(tau)s
               THEN GREATEST(r.tat, EXCLUDED.checked_at) + %(interval)s * LEAST(%(want)s,
                    floor((%(tau)s - (GREATEST(r.tat, EXCLUDED.checked_at) - EXCLUDED.checked_at)) / %(interval)s
                          + 1e-9) + 1)
               ELSE r.tat END,
    checked_at = CASE WHEN GREATEST(r.tat, EXCLUDED.checked_at) - EXCLUDED.checked_at <= %(tau)s
                      THEN GREATEST(r.tat, EXCLUDED.checked_at) ELSE EXCLUDED.checked_at END
RETURNING allowed, tat - checked_at
"""
_PG_PEEK = """
SELECT GREATEST(tat - extract(epoch FROM clock_timestamp())::float8, 0)
  FROM core_ratelimit WHERE bucket = %(bucket)s
"""
# A row whose tat has passed means exactly what no row means; drop them now and then.
_PG_PRUNE = "DELETE FROM core_ratelimit WHERE tat < extract(epoch FROM clock_timestamp())::float8"
_PRUNE_EVERY_SECONDS = 60.0


class PostgresLimiter:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._next_prune = 0.0

    def take(self, name: str, *, rate: float, per: float = 1.0, peek: bool = False) -> float:
        if not peek:  # the same single statement as a lease of one
            return self.take_many(name, rate=rate, per=per, want=1)[1]
        _interval, tau = gcra_parameters(rate=rate, per=per)
        with connection.cursor() as cursor:
            cursor.execute(_PG_PEEK, {"bucket": f"{self.namespace}:{name}"})
            row = cursor.fetchone()
        return max(0.0, row[0] - tau) if row else 0.0

    def take_many(self, name: str, *, rate: float, per: float = 1.0, want: int) -> tuple[int, float]:
        interval, tau = gcra_parameters(rate=rate, per=per)
        # A new row starts from the clock: at most the burst (tau / T + 1) at once.
        first = _grantable(ahead=0.0, interval=interval, tau=tau, want=want)
        params = {"bucket": f"{self.namespace}:{name}", "interval": interval, "tau": tau, "want": want, "first": first}
        with connection.cursor() as cursor:
            cursor.execute(_PG_TAKE_MANY, params)
            allowed, span = cursor.fetchone()
            self._prune_now_and_then(cursor)
        if not allowed:
            return 0, max(span - tau, 1e-6)
        return max(1, round(span / interval)), 0.0

    def _prune_now_and_then(self, cursor) -> None:
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + _PRUNE_EVERY_SECONDS
            cursor.execute(_PG_PRUNE)

    def reset(self) -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM core_ratelimit WHERE bucket LIKE %s", [f"{self.namespace}:%"])
        except Exception:  # test-only: a test without database access has nothing here to forget
            pass


# KEYS[1] the name; ARGV tau. The wait before the next event, counting nothing (``peek``), as a
# string (a Lua number would come back truncated to an integer). Redis's own clock: every web
# machine agrees on it.
_LUA_PEEK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local wait = tonumber(redis.call('GET', KEYS[1]) or '0') - now - tonumber(ARGV[1])
if wait > 0 then return tostring(wait) end
return '0'
"""


# Up to ARGV[3] events at once (one for ``take``, a lease for ``LeasedLimiter``): returns "granted wait" as a string.
_LUA_TAKE_MANY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if tat - now > tau then return '0 ' .. tostring(tat - now - tau) end
local granted = math.min(want, math.floor((tau - (tat - now)) / interval + 1e-9) + 1)
local new_tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return tostring(granted) .. ' 0'
"""


class RedisLimiter:
    """GCRA in Redis through a cache of ``django.core.cache.backends.redis.RedisCache``."""

    _LOG_EVERY_SECONDS = 30.0

    def __init__(self, namespace: str, *, cache_alias: str = "default") -> None:
        self.namespace = namespace
        self.cache_alias = cache_alias
        self._fallback = LocalLimiter(namespace)
        self._scripts: dict[str, object] = {}  # Lua source -> redis-py Script (registered once)
        self._script_lock = threading.Lock()
        self._next_log = 0.0

    def _key(self, name: str) -> str:
        return caches[self.cache_alias].make_key(f"ratelimit:{self.namespace}:{name}")

    def _client(self):
        # The cache's own connection pool (one per process), primary server for writes. Django's
        # RedisCache exposes its redis-py client only through the private ``_cache`` attribute.
        cache = caches[self.cache_alias]
        return cache._cache.get_client(write=True)  # noqa: SLF001 - RedisCache has no public client accessor

    def take(self, name: str, *, rate: float, per: float = 1.0, peek: bool = False) -> float:
        if not peek:  # the same single script as a lease of one
            return self.take_many(name, rate=rate, per=per, want=1)[1]
        _interval, tau = gcra_parameters(rate=rate, per=per)
        try:
            return float(self._run(_LUA_PEEK, name=name, args=[repr(tau)]))
        except redis.RedisError as exc:
            self._log_outage(exc)
            return self._fallback.take(name, rate=rate, per=per, peek=True)

    def take_many(self, name: str, *, rate: float, per: float = 1.0, want: int) -> tuple[int, float]:
        interval, tau = gcra_parameters(rate=rate, per=per)
        try:
            reply = self._run(_LUA_TAKE_MANY, name=name, args=[repr(interval), repr(tau), str(want)])
        except redis.RedisError as exc:
            self._log_outage(exc)
            return self._fallback.take_many(name, rate=rate, per=per, want=want)
        granted, wait = (reply.decode() if isinstance(reply, bytes) else reply).split()
        return int(granted), float(wait)

    def _run(self, source: str, *, name: str, args: list[str]):
        client = self._client()
        script = self._scripts.get(source)
        if script is None:
            with self._script_lock:
                script = self._scripts.setdefault(source, client.register_script(source))
        # EVALSHA: one round trip (redis-py loads the script once on NOSCRIPT).
        return script(keys=[self._key(name)], args=args, client=client)

    def _log_outage(self, exc: Exception) -> None:
        now = time.monotonic()
        if now >= self._next_log:
            self._next_log = now + self._LOG_EVERY_SECONDS
            logger.error("rate_limit_store_unavailable",
                         extra={"limiter": self.namespace, "error": type(exc).__name__,
                                "fallback": "per-process limits until Redis answers again"})

    def reset(self) -> None:
        self._fallback.reset()
        try:
            client = self._client()
            keys = list(client.scan_iter(match=self._key("*"), count=1000))
            if keys:
                client.delete(*keys)
        except redis.RedisError:
            pass
