"""Strict serializer fields: the contract says wrong JSON types are a 400, but DRF's CharField turns
42 into "42" and its IntegerField accepts "5" and 5.0. These accept exactly the JSON type asked for."""
from __future__ import annotations

import re

from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

__all__ = ["TOKEN_PATTERN", "StrictCharField", "StrictIntegerField", "StrictUUIDField", "TokenField"]

# fullmatch, not `^...$`: `$` also matches before a trailing newline.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")


# DRF refuses NUL characters in every CharField (PostgreSQL text cannot hold them); this validator
# never fires before DRF's own check, it exists so that drf-spectacular writes the rule into the schema.
NO_NUL = RegexValidator(r"^[^\x00]*$", message="Null characters are not allowed.")


class StrictCharField(serializers.CharField):
    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("trim_whitespace", False)  # keep what the client sent, byte for byte
        if not kwargs.get("allow_blank", False):
            # "" is refused (DRF's allow_blank=False): say so in the OpenAPI schema too (minLength),
            # or clients generated from it send "" and get a 400 the schema did not announce.
            kwargs.setdefault("min_length", 1)
        super().__init__(**kwargs)
        if not isinstance(self, TokenField):  # tokens have their own, stricter pattern
            self.validators.append(NO_NUL)

    def to_internal_value(self, data: object) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


@extend_schema_field({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$", "maxLength": 128})
class TokenField(StrictCharField):
    default_error_messages = {
        "invalid_token": "Must be 1 to 128 characters, each a letter, a digit, '_' or '-'.",
    }

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("max_length", 128)
        super().__init__(**kwargs)

    def to_internal_value(self, data: object) -> str:
        value = super().to_internal_value(data)
        if not TOKEN_PATTERN.fullmatch(value):
            self.fail("invalid_token")
        return value


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data: object) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictUUIDField(serializers.UUIDField):
    """A UUID sent as a JSON string (DRF's UUIDField also takes an integer as ``UUID(int=...)``)."""

    def to_internal_value(self, data: object) -> object:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
