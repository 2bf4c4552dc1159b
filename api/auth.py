"""API-key authentication (`Authorization: Api-Key <key>`), scopes and throttles.

Keys are djangorestframework-api-key keys (SHA-512 at rest). ``verify_api_key`` is the one check,
from the request's headers alone: ``api.middleware.ApiRequestGuardMiddleware`` runs it before
any request body is read (contract section 2), and ``ApiKeyAuthentication`` (DRF) reuses its result
(or runs it for bodyless requests).

Verifying a key costs one SELECT, about half of an authenticated no-op request (design notes), so
verified keys are cached for ``API_KEY_CACHE_SECONDS`` (default 5 s) keyed by the SHA-256 of the
raw key: a key revoked in the admin or with ``revoke_api_key`` stops working in every process
within that bound (at once in the process that revoked it). Unknown keys are never cached.

Failed authentications are limited per (client address, key prefix) for prefixes that exist and
per address for unknown ones (issue 20 finding 4). A prefix that exists is known in memory with its
secret's hash (keys/prefixes.py), so the secret is checked *before* any failure count: a key whose
secret verifies is never refused (401 or 429) because of other clients' failures, from the same
address or not. Once the shared store refuses a bucket, this process refuses it from memory until
the wait has passed: a throttled guess costs neither a key lookup nor a round trip.

The key cache (``KeyCache``) and the failed-authentication limiter (``FailedAuthLimiter`` over any
``Buckets``) are small interfaces. Both limits are shared by every process and machine
(``SharedLimiter``: PostgreSQL, or Redis with ``REDIS_URL``), and the per-process key cache is
emptied when the shared key generation moves, so a revocation anywhere applies everywhere within
``API_KEY_REVOCATION_CHECK_SECONDS`` whatever ``API_KEY_CACHE_SECONDS`` is. ``set_auth_backends``
swaps in others.
"""
from __future__ import annotations

import hashlib
import math
import threading
import time
from typing import Any, Protocol

from django.conf import settings
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from common.ttl_cache import TTLCache
from keys.keystate import GenerationCheckedKeyCache
from keys.models import ApiKey
from keys.prefixes import KnownPrefixes
from keys.services import api_key_mark_used
from keys.shared_limits import SharedLimiter

__all__ = ["ApiKeyAuthentication", "HasScope", "ApiKeyRateThrottle", "ApiKeyPrincipal", "reset_auth_state",
           "verify_api_key", "client_address", "KeyCache", "FailedAuthLimiter", "Buckets", "set_auth_backends"]

KEYWORD = "Api-Key"


class ApiKeyPrincipal:
    """What DRF sees as ``request.user`` for a service key (there are no human users on the API)."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, api_key: ApiKey) -> None:
        self.api_key = api_key
        self.pk = api_key.pk

    def __str__(self) -> str:
        return f"api-key:{self.api_key.name}"


# --- Interfaces a shared backend (Redis, PostgreSQL) implements -----------------------------------
class KeyCache(Protocol):
    def get(self, digest: str) -> ApiKey | None:
        """The verified key for this SHA-256 of a raw key, if verified within API_KEY_CACHE_SECONDS."""

    def put(self, digest: str, api_key: ApiKey) -> None: ...

    def recently_verified(self, digest: str) -> bool:
        """Whether this digest belonged to a valid key within API_KEY_KNOWN_SECONDS (no DB needed)."""

    def evict(self, key_id: str) -> None:
        """Forget a key (revoked or changed) now."""

    def forget_verified(self) -> None:
        """Forget every verified key, but not which digests were recently verified."""

    def clear(self) -> None: ...


class Buckets(Protocol):
    """A rate limiter by name (``keys.shared_limits.SharedLimiter``, ``keys.limits.LocalLimiter``, ...)."""

    def take(self, name: str, *, rate: float, per: float = 1.0, peek: bool = False) -> float:
        """0.0 if the event may happen now (and it is counted, unless ``peek``), else seconds to wait."""

    def reset(self) -> None: ...


# --- In-process implementations -----------------------------------------------------------------
class FailedAuthLimiter:
    """``API_AUTH_FAILURE_RATE_PER_MINUTE`` failed authentications per client address and minute,
    counted in ``buckets`` (in-process by default; give it a shared limiter to hold across processes)."""

    def __init__(self, buckets: Buckets) -> None:
        self.buckets = buckets

    def retry_after(self, address: str) -> float:
        """0.0 if ``address`` may try a key now, else seconds until it may (nothing is counted)."""
        return self.buckets.take(address, rate=settings.API_AUTH_FAILURE_RATE_PER_MINUTE, per=60.0, peek=True)

    def record_failure(self, address: str) -> float:
        """Count one failure: 0.0 if it was within the allowance, else seconds to wait."""
        return self.buckets.take(address, rate=settings.API_AUTH_FAILURE_RATE_PER_MINUTE, per=60.0)

    def reset(self) -> None:
        self.buckets.reset()


class VerifiedKeyCache:
    """Verified keys by digest for API_KEY_CACHE_SECONDS; digests of valid keys remembered (without
    the key) for API_KEY_KNOWN_SECONDS. Only valid keys get in, so both stay small; bounded anyway."""

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._entries: TTLCache[str, ApiKey] = TTLCache(maxsize=self.MAX_ENTRIES,
                                                        seconds=lambda: settings.API_KEY_CACHE_SECONDS)
        self._known: TTLCache[str, bool] = TTLCache(maxsize=self.MAX_ENTRIES,
                                                    seconds=lambda: settings.API_KEY_KNOWN_SECONDS)

    def get(self, digest: str) -> ApiKey | None:
        return self._entries.get(digest)

    def put(self, digest: str, api_key: ApiKey) -> None:
        self._known.put(digest, True)
        self._entries.put(digest, api_key)

    def recently_verified(self, digest: str) -> bool:
        return digest in self._known

    def evict(self, key_id: str) -> None:
        self._entries.discard_where(lambda _digest, api_key: api_key.pk == key_id)

    def forget_verified(self) -> None:
        self._entries.clear()

    def clear(self) -> None:
        self._entries.clear()
        self._known.clear()


# Shared by every process of the deployment (contract section 1): the limits live in PostgreSQL
# or Redis (keys/limits.py), and each process's key cache empties within a second of a change to
# any key anywhere (keys/keystate.py).
_key_cache: KeyCache = GenerationCheckedKeyCache(VerifiedKeyCache())
_auth_failures = FailedAuthLimiter(SharedLimiter("authfail"))
_key_rates: Buckets = SharedLimiter("key")
_prefixes = KnownPrefixes()
# Failed-authentication buckets the shared store refused: bucket -> monotonic time they may retry.
_refused: dict[str, float] = {}
_refused_lock = threading.Lock()


def set_auth_backends(*, key_cache: KeyCache | None = None, failed_auth: FailedAuthLimiter | None = None) -> None:
    """Replace the in-process key cache and/or failed-authentication limiter (shared backends)."""
    global _key_cache, _auth_failures
    if key_cache is not None:
        _key_cache = key_cache
    if failed_auth is not None:
        _auth_failures = failed_auth


def reset_auth_state() -> None:
    """Forget cached keys and every bucket (tests; nothing else should need it)."""
    _key_cache.clear()
    _auth_failures.reset()
    _key_rates.reset()
    _prefixes.clear()
    with _refused_lock:
        _refused.clear()


@receiver(post_save, sender=ApiKey, dispatch_uid="api.auth.evict_saved_key")
def _evict_saved_key(sender: type[ApiKey], instance: ApiKey, **kwargs: Any) -> None:
    _key_cache.evict(instance.pk)


def client_address(meta: dict[str, Any]) -> str:
    """The client's address for the failed-authentication limit. Behind the edge proxy every request
    comes from the proxy, which sets ``X-Forwarded-For`` to the address it accepted the connection from
    (replacing what a client sent: Caddy trusts no upstream proxies here); its last entry is taken.
    ``settings.API_CLIENT_ADDRESS_HEADER`` empty: ``REMOTE_ADDR`` (a server reachable without the proxy)."""
    header = settings.API_CLIENT_ADDRESS_HEADER
    forwarded = meta.get(header, "") if header else ""
    if forwarded:
        return forwarded.rsplit(",", 1)[-1].strip() or "unknown"
    return meta.get("REMOTE_ADDR") or "unknown"


def _throttled(wait: float) -> exceptions.Throttled:
    return exceptions.Throttled(wait=max(1, math.ceil(wait)))


def _usable(api_key: ApiKey) -> bool:
    return api_key.expiry_date is None or api_key.expiry_date > timezone.now()


def _cached_key(digest: str, raw_key: str) -> ApiKey | None:
    """The cached key of this digest if it is still usable; AuthenticationFailed if it expired or
    ``raw_key`` is a rotated-out secret whose overlap has ended."""
    cached = _key_cache.get(digest)
    if cached is None or (_usable(cached) and cached.secret_still_valid(raw_key)):
        return cached
    _key_cache.evict(cached.pk)
    raise exceptions.AuthenticationFailed("The API key has expired.")


def _usable_key(raw_key: str) -> ApiKey | None:
    """The stored key for ``raw_key`` (its current secret, or the previous one while a rotation's
    overlap lasts) if it exists, is not revoked and has not expired."""
    try:
        api_key = ApiKey.objects.get_from_key(raw_key)  # excludes revoked keys
    except ApiKey.DoesNotExist:
        prefix = raw_key.partition(".")[0]
        api_key = ApiKey.objects.filter(previous_prefix=prefix, revoked=False).first() if prefix else None
        if api_key is None or not api_key.previous_secret_valid(raw_key):
            return None
    return api_key if _usable(api_key) else None


def _key_by_id(key_id: str) -> ApiKey | None:
    """The stored key by id (its secret already verified) if it is not revoked and has not expired."""
    api_key = ApiKey.objects.filter(pk=key_id, revoked=False).first()
    return api_key if api_key is not None and _usable(api_key) else None


def _bucket(address: str, prefix: str | None) -> str:
    """Failed authentications count per (address, key prefix) for a prefix that exists, and per
    address for everything else (unknown prefixes, malformed headers)."""
    return f"{address}|{prefix}" if prefix else f"{address}|*"


def _locally_refused(bucket: str) -> float:
    """Seconds this process already knows ``bucket`` must wait (no round trip to the shared store)."""
    with _refused_lock:
        until = _refused.get(bucket)
        if until is None:
            return 0.0
        wait = until - time.monotonic()
        if wait <= 0:
            del _refused[bucket]
            return 0.0
        return wait


def _refuse(bucket: str) -> exceptions.APIException:
    """Count one failed authentication of ``bucket``: 401, or 429 once it failed too often. A bucket
    the shared store refused is refused from memory until its wait has passed: a throttled guess
    costs neither a key lookup nor a round trip to the store."""
    wait = _locally_refused(bucket)
    if not wait:
        wait = _auth_failures.record_failure(bucket)
        if wait:
            with _refused_lock:
                if len(_refused) > 100_000:  # a scan of many addresses: bound the memory
                    _refused.clear()
                _refused[bucket] = time.monotonic() + wait
    if wait:
        return _throttled(wait)
    return exceptions.AuthenticationFailed("Missing, unknown or revoked API key.")


def _accepted(digest: str, api_key: ApiKey) -> ApiKey:
    _key_cache.put(digest, api_key)
    _prefixes.add(api_key)
    api_key_mark_used(api_key=api_key)
    return api_key


def verify_api_key(*, authorization: str | None, address: str) -> ApiKey | None:
    """The key named by an ``Authorization`` header value, from headers alone (no body is read).

    ``None`` when there is no header (→ 401 from the scope check). Raises DRF's
    ``AuthenticationFailed`` (401) for a wrong/unknown/revoked/expired key, ``Throttled`` (429)
    when this (address, prefix) — or this address, for unknown prefixes — has failed too often, and
    lets database errors through (→ 503). A key whose secret verifies is never throttled here:
    its secret is checked (in memory, keys/prefixes.py) before any failure count is consulted."""
    if not authorization:
        return None
    keyword, _, raw_key = authorization.partition(" ")
    raw_key = raw_key.strip()
    if keyword.lower() != KEYWORD.lower() or not raw_key:
        raise _refuse(_bucket(address, None))
    digest = hashlib.sha256(raw_key.encode()).hexdigest()
    cached = _cached_key(digest, raw_key)
    if cached is not None:
        api_key_mark_used(api_key=cached)
        return cached
    prefix = raw_key.partition(".")[0]
    known = _prefixes.get(prefix)
    if known is None:
        # A prefix no usable key had at the last reload: a guess, or a key created within the last
        # API_KEY_REVOCATION_CHECK_SECONDS. Counted first, so a throttled address is refused before
        # any key lookup (a bounded prefix reload aside); from an address that is not throttled the
        # new key is looked up.
        refusal = _refuse(_bucket(address, None))
        if isinstance(refusal, exceptions.Throttled):
            # The address is throttled for unknown prefixes; a key created a moment ago must not be
            # refused for it (contract section 1): one bounded early reload of the prefixes decides.
            known = _prefixes.get_fresh(prefix)
            if known is None or not known.verifies(raw_key) or (api_key := _key_by_id(known.key_id)) is None:
                raise refusal
            return _accepted(digest, api_key)
        api_key = _usable_key(raw_key)
        if api_key is None:
            raise refusal
        return _accepted(digest, api_key)
    if not known.verifies(raw_key):  # a wrong secret for a real prefix: checked in memory
        raise _refuse(_bucket(address, prefix))
    api_key = _key_by_id(known.key_id)
    if api_key is None:  # revoked or expired since the prefixes were loaded
        raise _refuse(_bucket(address, prefix))
    return _accepted(digest, api_key)


# Set on the Django request by the guard middleware once the key is verified (or found missing).
VERIFIED_ATTR = "verified_api_key"
_NOT_CHECKED = object()


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ApiKeyPrincipal, ApiKey] | None:
        # The key name goes on the Django request (the request logger sees no DRF Request);
        # DRF offers no public accessor for the request it wraps.
        django_request = request._request  # noqa: SLF001 - DRF has no public API for the wrapped request
        api_key = getattr(django_request, VERIFIED_ATTR, _NOT_CHECKED)
        if api_key is _NOT_CHECKED:
            api_key = verify_api_key(authorization=request.META.get("HTTP_AUTHORIZATION"),
                                     address=client_address(request.META))
        if api_key is None:
            return None  # → 401 not_authenticated from the scope check
        # For the request logger (monitoring): the key's name, never the key.
        django_request.api_key_name = api_key.name
        return ApiKeyPrincipal(api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        # Also what keeps DRF from turning our 401s into 403s.
        return KEYWORD


class HasScope(BasePermission):
    """The view's ``required_scope`` must be one of the key's scopes (no key → 401, else 403)."""

    message = "This API key does not have the scope this endpoint needs."

    def has_permission(self, request: Request, view: Any) -> bool:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            return False
        return api_key.has_scope(view.required_scope)


class ApiKeyRateThrottle(BaseThrottle):
    """Per-key limit in units per second, ``rate_limit_per_second`` or ``API_THROTTLE_RATE_PER_SECOND``:
    a request costs 1, a batch its item count (the view's ``throttle_cost``)."""

    def __init__(self) -> None:
        self._wait = 0.0

    def allow_request(self, request: Request, view: Any) -> bool:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            return True
        rate = api_key.rate_limit_per_second or settings.API_THROTTLE_RATE_PER_SECOND
        cost = view.throttle_cost(request) if hasattr(view, "throttle_cost") else 1
        # A cost of N is one GCRA event N emission intervals long: the same bucket (the store keys
        # it by name) at rate / N. A batch above one second's allowance passes on an empty bucket.
        self._wait = _key_rates.take(api_key.pk, rate=rate / cost)
        return self._wait == 0.0

    def wait(self) -> float:
        return max(1, math.ceil(self._wait))


class ApiKeyAuthScheme(OpenApiAuthenticationExtension):
    target_class = "api.auth.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`Api-Key <key>` (create one with `manage.py create_api_key`)."}
