"""API-key authentication of the naive peer. Its own module, not views.py: DRF imports the
DEFAULT_AUTHENTICATION_CLASSES while rest_framework.views is still loading, so this module must
not import APIView."""
from __future__ import annotations

import hashlib
from typing import Any

from rest_framework import exceptions, permissions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from bench.naive_peer.models import ApiKey


class ApiKeyAuthentication(BaseAuthentication):
    """``Authorization: Api-Key <key>``, checked by its sha256 against ``api_keys`` on every request."""

    keyword = "Api-Key"

    def authenticate(self, request: Request) -> tuple[Any, ApiKey] | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith(f"{self.keyword} "):
            return None
        digest = hashlib.sha256(header[len(self.keyword) + 1:].strip().encode()).hexdigest()
        key = ApiKey.objects.filter(key_hash=digest, revoked=False).first()
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        return (None, key)

    def authenticate_header(self, request: Request) -> str:
        return self.keyword  # makes DRF answer 401 (not 403) to a missing key


class HasApiKey(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, ApiKey)
