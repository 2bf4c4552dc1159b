"""How TokenPoolClient reads and writes TokenPool's wire format (contract section 2): error bodies to
typed errors, failed attempts to log lines, batch answers, URLs and idempotency keys.

An internal module of the package (split from ``pool_client`` to keep each module readable).
"""
from __future__ import annotations

import atexit
import hashlib
import logging
import os
import weakref
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from tokenpool_tome.errors import TokenPoolError, TokenPoolUnavailable, tokenpool_error_class
from tokenpool_tome.http_layer import Attempt, ErrorAnswer
from tokenpool_tome.reservation import Reservation

__all__ = [
    "MAX_IDEMPOTENCY_KEY", "ProcessHooks", "api_root", "derived_key", "gave_up", "listed", "log_failed_attempt",
    "path_label",     "quoted_id", "read_tokenpool_error", "refusal", "split",
]

logger = logging.getLogger("tokenpool.client")

MAX_IDEMPOTENCY_KEY = 255


def read_tokenpool_error(body: Any) -> tuple[str, str, dict[str, Any] | None, str | None]:
    """The contract's error body: ``code``, ``detail``, per-field ``errors`` and ``correlation_id``."""
    code = str(body["code"])[:64]  # first: a body that is not an object fails here, as a TypeError
    errors = body.get("errors") if isinstance(body.get("errors"), dict) else None
    correlation_id = body.get("correlation_id")
    return code, str(body.get("detail", ""))[:300], errors, str(correlation_id) if correlation_id else None


def refusal(answer: ErrorAnswer) -> TokenPoolError:
    """The typed error of an answer TokenPool gave (its class named by the contract's ``code``)."""
    error_cls = tokenpool_error_class(answer.status, answer.code)
    return error_cls(answer.message, code=answer.code, status=answer.status, correlation_id=answer.correlation_id,
                     errors=answer.errors, retry_after=answer.retry_after)


def gave_up(last: Attempt) -> TokenPoolError:
    """The error of a call whose every attempt failed in a retryable way."""
    answer, suffix = last.answer, f"(after {last.number} attempt(s))"
    if answer is None:
        timed_out = last.no_answer is not None and issubclass(last.no_answer, httpx.TimeoutException)
        return TokenPoolUnavailable(f"no answer from TokenPool ({last.error}) {suffix}",
                                    code="timeout" if timed_out else "connection_error",
                                    correlation_id=last.correlation_id)
    if answer.status == 429:
        return refusal(answer)  # Throttled: TokenPool answered, so no fallback
    return TokenPoolUnavailable(f"{answer.message} {suffix}", code=answer.code, status=answer.status,
                                correlation_id=answer.correlation_id, retry_after=answer.retry_after)


def log_failed_attempt(path: str, attempt: Attempt) -> None:
    """One info line per retryable failure: the outage shows in the logs before the fallback does."""
    if not attempt.retryable:
        return
    extra: dict[str, Any] = {"path": path_label(path), "attempt": attempt.number}
    if attempt.answer is None:
        extra.update(error=attempt.error, correlation_id=attempt.correlation_id)
    else:
        extra.update(status_code=attempt.status_code, error=attempt.answer.code,
                     correlation_id=attempt.answer.correlation_id)
    logger.info("tokenpool_attempt_failed", extra=extra)


def listed(answer: Any, key: str, count: int) -> list[Any]:
    """``answer[key]``, which must be a list of ``count`` items (the contract's batch answers)."""
    try:
        items = answer[key]
    except (KeyError, TypeError):
        items = None
    if not isinstance(items, list) or len(items) != count:
        raise TokenPoolError(f"expected {count} {key} in the response", code="malformed_response")
    return items


def quoted_id(reservation: str | Reservation) -> str:
    reservation_id = reservation.reservation_id if isinstance(reservation, Reservation) else reservation
    if not reservation_id:
        raise ValueError("no reservation id: a client_direct reservation is confirmed or released "
                         "by passing the Reservation itself")
    return quote(str(reservation_id), safe="")


def path_label(path: str) -> str:
    # Reservation ids are not secrets, but a bounded label keeps log cardinality low.
    parts = path.split("/")
    if parts[0] == "reservations" and len(parts) > 1 and parts[-1] != "batch":
        return "/".join(["reservations", "{id}", *parts[2:]])
    return path


def api_root(base_url: str) -> str:
    """``https://host[/prefix]`` → ``https://host[/prefix]/api/v1/``; a base URL that already ends in
    ``/api/v1`` is taken as is (otherwise every call would 404, and lookups would quietly say None)."""
    root = base_url.rstrip("/")
    return (root if root.endswith("/api/v1") else root + "/api/v1") + "/"


def split(count: int, size: int) -> list[int]:
    return [min(size, count - start) for start in range(0, count, size)]


def derived_key(key: str, index: int) -> str:
    """A per-chunk key, stable across calls with the same ``key`` and within 255 characters."""
    base = key if len(key) <= MAX_IDEMPOTENCY_KEY - 8 else hashlib.sha256(key.encode()).hexdigest()
    return f"{base}.{index}"


class _Closable(Protocol):
    def close(self) -> None: ...

    def after_fork_in_child(self) -> None: ...


class ProcessHooks:
    """A client's ties to its process, held weakly (a dropped client is simply collected):
    ``close()`` at interpreter exit, in the process that made it only, and ``after_fork_in_child()``
    in a forked child (gunicorn's preload, multiprocessing), which must never use the parent's
    buffer or connections. No signal handler is installed: SIGTERM's default action ends a process
    without interpreter exit (docs/client-library.md says what to do about it)."""

    def __init__(self, client: _Closable) -> None:
        ref = weakref.ref(client)
        self._pid = os.getpid()

        def at_exit() -> None:
            target = ref()
            if target is not None and os.getpid() == self._pid:
                target.close()

        def in_child() -> None:
            target = ref()
            if target is not None:
                self._pid = os.getpid()  # the child's copy now belongs to the child
                target.after_fork_in_child()

        self._at_exit = at_exit
        atexit.register(at_exit)
        os.register_at_fork(after_in_child=in_child)

    def closed(self) -> None:
        """The client closed itself: nothing left to do at exit."""
        atexit.unregister(self._at_exit)
