"""JSON parser that never reads more than the 64 KiB the contract allows.

DRF hands its parsers the raw request stream, bypassing Django's DATA_UPLOAD_MAX_MEMORY_SIZE check
(which only guards ``request.body``); ``ApiErrorMiddleware`` refuses bodies whose Content-Length is
too large, and this bounds the read itself."""
from __future__ import annotations

import io
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from common.errors import PayloadTooLarge

__all__ = ["BoundedJSONParser"]


class BoundedJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge()
        try:
            return super().parse(io.BytesIO(raw), media_type, parser_context)
        except RecursionError:  # pathologically nested JSON ([[[[…) is bad input, not a 500
            raise ParseError("JSON parse error - nested too deeply.") from None
