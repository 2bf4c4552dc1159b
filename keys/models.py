"""Service API keys: hashed at rest (djangorestframework-api-key), scoped, revocable."""
from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from rest_framework_api_key.models import AbstractAPIKey

from common.choices import TextChoices

__all__ = ["ApiKey", "ApiScope"]


class ApiScope(TextChoices):
    RESERVE = "reserve", "reserve / confirm / release"
    LOOKUP = "lookup", "lookup"
    DETOKENIZE = "detokenize", "detokenize"
    POOLS_READ = "pools:read", "read pool health"


class ApiKey(AbstractAPIKey):
    scopes = ArrayField(models.CharField(max_length=32, choices=ApiScope.choices), default=list)
    # Per-key throttle; null = settings.API_THROTTLE_RATE_PER_SECOND (contract default 1,000/s).
    rate_limit_per_second = models.PositiveIntegerField(null=True, blank=True)

    class Meta(AbstractAPIKey.Meta):
        db_table = "core_apikey"
        verbose_name = "API key"
        verbose_name_plural = "API keys"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(scopes__contained_by=[c.value for c in ApiScope]),
                name="apikey_scopes_known",
            ),
        ]

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes
