"""API-key authentication (`Authorization: Api-Key <key>`), scopes and throttles.

Keys are djangorestframework-api-key keys (SHA-512 at rest). Verifying a key costs one SELECT,
about half of an authenticated no-op request (design notes), so verified keys are cached in
process for ``API_KEY_CACHE_SECONDS`` (default 5 s) keyed by the SHA-256 of the raw key: a key
revoked in the admin or with ``revoke_api_key`` stops working in every process within that bound
(at once in the process that revoked it). Unknown keys are never cached.

Both limits are in-process token buckets: with N web workers a key can reach up to N times its
configured rate, and failed authentications are counted per worker. Good enough to stop a
runaway client or a key-guessing loop on one machine; a shared limiter (Redis, the database) is
the step up if keys must be held to their exact rate across workers.
"""
from __future__ import annotations

import hashlib
import math
import threading
import time
from typing import Any

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

from core.api.models import ApiKey

__all__ = ["ApiKeyAuthentication", "HasScope", "ApiKeyRateThrottle", "ApiKeyPrincipal", "reset_auth_state"]

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


class TokenBucket:
    """Thread-safe token buckets by name: ``rate`` tokens per ``per`` seconds, burst ``rate``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, name: str, *, rate: float, per: float = 1.0, peek: bool = False) -> float:
        """0.0 if a token was taken (or is there, with ``peek``), else seconds until one is."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._state.get(name, (rate, now))
            tokens = min(rate, tokens + (now - last) * rate / per)
            if tokens >= 1.0:
                if not peek:
                    tokens -= 1.0
                self._state[name] = (tokens, now)
                return 0.0
            self._state[name] = (tokens, now)
            return (1.0 - tokens) * per / rate

    def reset(self) -> None:
        with self._lock:
            self._state.clear()


class VerifiedKeyCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[ApiKey, float]] = {}

    def get(self, digest: str) -> ApiKey | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[1] < time.monotonic():
            with self._lock:
                self._entries.pop(digest, None)
            return None
        return entry[0]

    def put(self, digest: str, api_key: ApiKey) -> None:
        ttl = getattr(settings, "API_KEY_CACHE_SECONDS", 5.0)
        if ttl <= 0:
            return
        with self._lock:
            if len(self._entries) > 10_000:  # only valid keys get here; bound it all the same
                self._entries.clear()
            self._entries[digest] = (api_key, time.monotonic() + ttl)

    def evict(self, key_id: str) -> None:
        with self._lock:
            for digest in [d for d, (k, _) in self._entries.items() if k.pk == key_id]:
                del self._entries[digest]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_key_cache = VerifiedKeyCache()
_auth_failures = TokenBucket()
_key_rates = TokenBucket()


def reset_auth_state() -> None:
    """Forget cached keys and every bucket (tests; nothing else should need it)."""
    _key_cache.clear()
    _auth_failures.reset()
    _key_rates.reset()


@receiver(post_save, sender=ApiKey, dispatch_uid="core.api.auth.evict_saved_key")
def _evict_saved_key(sender: type[ApiKey], instance: ApiKey, **kwargs: Any) -> None:
    _key_cache.evict(instance.pk)


def _client_address(request: Request) -> str:
    return request.META.get("REMOTE_ADDR") or "unknown"


def _throttled(wait: float) -> exceptions.Throttled:
    return exceptions.Throttled(wait=max(1, math.ceil(wait)))


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ApiKeyPrincipal, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION")
        if not header:
            return None  # → 401 not_authenticated from the scope check
        keyword, _, raw_key = header.partition(" ")
        raw_key = raw_key.strip()
        digest = hashlib.sha256(raw_key.encode()).hexdigest() if raw_key else ""
        api_key = _key_cache.get(digest) if keyword.lower() == KEYWORD.lower() and raw_key else None
        if api_key is None:
            api_key = self._verify(request, keyword=keyword, raw_key=raw_key, digest=digest)
        elif api_key.expiry_date is not None and api_key.expiry_date <= timezone.now():
            _key_cache.evict(api_key.pk)
            raise exceptions.AuthenticationFailed("The API key has expired.")
        # For the request logger (monitoring): the key's name, never the key.
        request._request.api_key_name = api_key.name
        return ApiKeyPrincipal(api_key), api_key

    def _verify(self, request: Request, *, keyword: str, raw_key: str, digest: str) -> ApiKey:
        api_key = None
        if keyword.lower() == KEYWORD.lower() and raw_key:
            try:
                api_key = ApiKey.objects.get_from_key(raw_key)  # excludes revoked keys
            except ApiKey.DoesNotExist:
                api_key = None
            if api_key is not None and api_key.has_expired:
                api_key = None
        if api_key is None:
            # Only failures are limited per address: behind a shared proxy address, one client's
            # key-guessing loop must not lock out every valid key (a valid key proves itself).
            wait = _auth_failures.take(_client_address(request),
                                       rate=settings.API_AUTH_FAILURE_RATE_PER_MINUTE, per=60.0)
            if wait:
                raise _throttled(wait)
            raise exceptions.AuthenticationFailed("Missing, unknown or revoked API key.")
        _key_cache.put(digest, api_key)
        return api_key

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
    """Per-key token bucket: ``rate_limit_per_second`` or ``API_THROTTLE_RATE_PER_SECOND``."""

    def __init__(self) -> None:
        self._wait = 0.0

    def allow_request(self, request: Request, view: Any) -> bool:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            return True
        rate = api_key.rate_limit_per_second or settings.API_THROTTLE_RATE_PER_SECOND
        self._wait = _key_rates.take(api_key.pk, rate=rate)
        return self._wait == 0.0

    def wait(self) -> float:
        return max(1, math.ceil(self._wait))


class ApiKeyAuthScheme(OpenApiAuthenticationExtension):
    target_class = "core.api.auth.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`Api-Key <key>` (create one with `manage.py create_api_key`)."}
