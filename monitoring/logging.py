"""JSON log lines carrying the correlation id; sensitive fields never reach the output.

Three layers, because a token can reach a log call in three ways:
- by field name: ``extra={"internal_token": ...}`` (or any key in ``REDACTED_KEYS``, at any depth)
  is written as ``"[redacted]"``;
- inside free text (the message, an exception's message): anything shaped like a TokenPool API key,
  an ``Authorization`` value, an NS1 token (16+ digits), an NS2 reference (``ext_...``) or the value
  PostgreSQL quotes in a constraint error (``Key (internal_token)=(...)``) is replaced;
- exceptions: the type, the redacted message and the stack as ``file:line function`` frames only
  (no local variables, no source text), so a 500 is debuggable without leaking its data.
"""
from __future__ import annotations

import json
import logging
import re
import traceback
from datetime import UTC, datetime

from tokenpool_tome.correlation import get_correlation_id

# Keys whose values are secrets or token material: logged as "[redacted]" whatever the caller passed.
REDACTED_KEYS = frozenset(
    {"value", "values", "token", "tokens", "internal_token", "internal_tokens", "external_ref_id",
     "external_ref_ids", "api_key", "key", "raw_key", "authorization", "password", "secret", "pan",
     "cookie", "sessionid", "csrftoken", "http_authorization"}
)
REDACTED = "[redacted]"
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_TEXT_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Authorization header values: "Api-Key <key>", "Bearer <token>", "Basic <creds>".
    (re.compile(r"\b(Api-Key|Bearer|Basic)(\s+)[^\s\"',;]+", re.IGNORECASE), r"\1\2" + REDACTED),
    # djangorestframework-api-key raw keys: 8-char prefix "." 32-char secret.
    (re.compile(r"\b[A-Za-z0-9]{8}\.[A-Za-z0-9]{32}\b"), REDACTED),
    # PostgreSQL constraint errors quote the offending values: "Key (col)=(value) already exists".
    (re.compile(r"(Key \([^)]*\)=\()(.*?)(\)( already exists| is not present| conflicts)?)"), r"\1" + REDACTED + r"\3"),
    # ... and check-constraint errors quote the whole row.
    (re.compile(r"(Failing row contains \().*(\))"), r"\1" + REDACTED + r"\2"),
    # NS2 external reference ids and NS1 numeric tokens (TOME formats, docs/tome-api.md).
    (re.compile(r"\bext_[A-Za-z0-9]{6,}\b"), REDACTED),
    (re.compile(r"\b\d{16,}\b"), REDACTED),
]


# Cheap tests that tell whether any pattern above could apply: most log text (routes, pool names,
# event names) has none, and a combined case-insensitive regex costs ~15 µs per string on its own.
_DIGITS = re.compile(r"\d{16}")
_DOTTED = re.compile(r"\.[A-Za-z0-9]{32}")


def _maybe_secret(text: str) -> bool:
    lowered = text.lower()
    return ("key" in lowered or "bearer" in lowered or "basic" in lowered or "ext_" in text
            or "Failing row" in text or _DOTTED.search(text) is not None or _DIGITS.search(text) is not None)


def redact_text(text: str) -> str:
    if len(text) < 8 or not _maybe_secret(text):
        return text
    for pattern, replacement in _TEXT_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact(value: object, key: str = "") -> object:
    if key.lower() in REDACTED_KEYS:
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if hasattr(value, "method") and hasattr(value, "path") and hasattr(value, "META"):
        return _describe_request(value)
    return redact_text(str(value))


class CorrelationIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "correlation_id", None):
            # django.request logs 4xx/5xx after the correlation middleware has returned; the
            # request it passes along still carries the id.
            record.correlation_id = get_correlation_id() or getattr(
                getattr(record, "request", None), "correlation_id", None)
        return True


def _describe_request(value: object) -> str:
    # Method and path only: the repr of a request would add the query string, where a client may
    # have put anything.
    return f"{getattr(value, 'method', '')} {redact_text(str(getattr(value, 'path', '')))}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format must not lose the line
            message = str(record.msg)
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "event": redact_text(message),
        }
        for attr, value in vars(record).items():
            if attr not in _STANDARD_ATTRS and not attr.startswith("_"):
                payload[attr] = redact(value, attr)
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, tb = record.exc_info
            payload["exc_type"] = exc_type.__name__
            payload["exc_message"] = redact_text(str(exc))[:1000]
            payload["exc_stack"] = [f"{f.filename}:{f.lineno} {f.name}" for f in traceback.extract_tb(tb)][-30:]
        return json.dumps(payload, default=str)
