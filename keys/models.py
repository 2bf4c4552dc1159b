# mypy: allow-subclassing-any
# (Django ships no type information and the project runs mypy without django-stubs: models.Model is Any.)
"""Consumers (the teams or services that use TokenPool) and their service API keys: hashed at rest
(djangorestframework-api-key), scoped, revocable, rotatable with an overlap."""
from __future__ import annotations

from typing import Any

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone
from rest_framework_api_key.models import AbstractAPIKey, BaseAPIKeyManager

from common.append_only import AppendOnlyModel
from common.choices import TextChoices

__all__ = ["ApiKey", "ApiKeyUsage", "ApiScope", "Consumer", "KeyEvent", "KeyEventAction"]


class ApiScope(TextChoices):
    RESERVE = "reserve", "reserve / confirm / release"
    LOOKUP = "lookup", "lookup (own consumer's pairs)"
    DETOKENIZE = "detokenize", "detokenize (own consumer's pairs)"
    POOLS_READ = "pools:read", "read pool health"
    LOOKUP_ANY = "lookup:any", "lookup: other consumers' pairs too"
    DETOKENIZE_ANY = "detokenize:any", "detokenize: other consumers' pairs too"
    LOOKUP_TOME = "lookup:tome", "lookup: live TOME passthrough for tokens the pool never issued"
    DETOKENIZE_TOME = "detokenize:tome", "detokenize: live TOME passthrough for tokens the pool never issued"


class Consumer(models.Model):
    """A consuming team or service. Lookups and detokenizes answer only the pairs its keys reserved
    (need-to-know, contract section 2), unless a key holds an ``:any`` grant."""

    name = models.CharField(max_length=50, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "keys_consumer"
        ordering = ["name"]

    def __str__(self) -> str:
        return str(self.name)


class ApiKeyManager(BaseAPIKeyManager):
    def create_key(self, **kwargs: Any) -> tuple[ApiKey, str]:
        """The library's ``create_key``; without ``consumer`` the key belongs to the consumer named
        like the key (created if needed), as ``create_api_key NAME`` does."""
        if "consumer" not in kwargs and "consumer_id" not in kwargs:
            kwargs["consumer"] = Consumer.objects.get_or_create(name=kwargs["name"])[0]
        return super().create_key(**kwargs)


class ApiKey(AbstractAPIKey):
    consumer = models.ForeignKey(Consumer, on_delete=models.PROTECT, related_name="api_keys")
    scopes = ArrayField(models.CharField(max_length=32, choices=ApiScope.choices), default=list)
    # Per-key throttle in units per second (a request costs 1, a batch its item count);
    # null = settings.API_THROTTLE_RATE_PER_SECOND (contract default 1,000/s).
    rate_limit_per_second = models.PositiveIntegerField(null=True, blank=True)
    # Rotation (rotate_api_key): the secret before the last rotation keeps working until
    # ``previous_valid_until``. The row (and so every reservation and audit record) stays the same.
    previous_prefix = models.CharField(max_length=8, null=True, blank=True, unique=True, editable=False)
    previous_hashed_key = models.CharField(max_length=150, null=True, blank=True, editable=False)
    previous_valid_until = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiKeyManager()

    class Meta(AbstractAPIKey.Meta):
        db_table = "core_apikey"
        verbose_name = "API key"
        verbose_name_plural = "API keys"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(scopes__contained_by=[c.value for c in ApiScope]),
                name="apikey_scopes_known",
            ),
            models.CheckConstraint(
                condition=models.Q(previous_prefix__isnull=True, previous_hashed_key__isnull=True,
                                   previous_valid_until__isnull=True)
                | models.Q(previous_prefix__isnull=False, previous_hashed_key__isnull=False,
                           previous_valid_until__isnull=False),
                name="apikey_previous_secret_complete",
            ),
        ]

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def previous_secret_valid(self, raw_key: str) -> bool:
        """Whether ``raw_key`` is this key's pre-rotation secret and its overlap has not ended."""
        if not self.previous_prefix or self.previous_valid_until is None:
            return False
        if self.previous_valid_until <= timezone.now() or raw_key.partition(".")[0] != self.previous_prefix:
            return False
        return bool(type(self).objects.key_generator.verify(raw_key, self.previous_hashed_key))

    def secret_still_valid(self, raw_key: str) -> bool:
        """For a key found by either prefix: is ``raw_key`` still accepted (current, or previous in overlap)?"""
        return raw_key.partition(".")[0] == self.prefix or self.previous_secret_valid(raw_key)


class KeyEventAction(TextChoices):
    CREATED = "created"
    ROTATED = "rotated"
    REVOKED = "revoked"


class KeyEvent(AppendOnlyModel):
    """Audit of key management: creation, rotation (with the overlap's end), revocation."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="events")
    action = models.CharField(max_length=16, choices=KeyEventAction.choices)
    actor = models.CharField(max_length=150, blank=True, default="",
                             help_text="Who did it: a management command, an admin user.")
    detail = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "keys_keyevent"
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.action} {self.api_key.name}"


class ApiKeyUsage(models.Model):
    """When a key was last used (to the minute). A table of its own: an UPDATE of ``core_apikey``
    moves the shared key generation and empties every process's key cache (keys/keystate.py)."""

    api_key = models.OneToOneField(ApiKey, on_delete=models.CASCADE, primary_key=True, related_name="usage")
    last_used_at = models.DateTimeField()

    class Meta:
        db_table = "keys_apikeyusage"
