"""The current request's correlation id, shared by logs, the API and TOME calls.

Kept free of Django imports so the TokenizationLibrary can read it when used on its own.
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

CORRELATION_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_current: ContextVar[str | None] = ContextVar("correlation_id", default=None)


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def accept_or_generate(candidate: str | None) -> str:
    """The caller's id when it is well-formed, otherwise a fresh one (contract rule)."""
    if candidate and CORRELATION_ID_PATTERN.fullmatch(candidate):
        return candidate
    return new_correlation_id()


def get_correlation_id() -> str | None:
    return _current.get()


@contextmanager
def correlation_scope(correlation_id: str | None = None) -> Iterator[str]:
    """Bind a correlation id for the duration of a block (a request, a task, a refill run)."""
    value = correlation_id or new_correlation_id()
    token = _current.set(value)
    try:
        yield value
    finally:
        _current.reset(token)
