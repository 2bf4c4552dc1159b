"""JSON log lines carrying the correlation id; sensitive fields never reach the output."""
from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone

from core.correlation import get_correlation_id

# Keys whose values are secrets or token material: logged as "[redacted]" whatever the caller passed.
REDACTED_KEYS = frozenset(
    {"value", "values", "token", "tokens", "internal_token", "external_ref_id", "api_key", "key",
     "authorization", "password", "secret", "raw_key", "pan"}
)
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# Belt and braces for free text: anything shaped like a TokenPool API key or a bearer token.
_SECRET_PATTERN = re.compile(r"(Api-Key\s+|Bearer\s+)[^\s\"']+", re.IGNORECASE)


def redact(value: object, key: str = "") -> object:
    if key.lower() in REDACTED_KEYS:
        return "[redacted]"
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _SECRET_PATTERN.sub(r"\1[redacted]", value)
    return value


class CorrelationIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "correlation_id", None):
            record.correlation_id = get_correlation_id()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "event": _SECRET_PATTERN.sub(r"\1[redacted]", record.getMessage()),
        }
        for attr, value in vars(record).items():
            if attr not in _STANDARD_ATTRS and not attr.startswith("_"):
                payload[attr] = redact(value, attr)
        if record.exc_info:
            payload["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
        return json.dumps(payload, default=str)
