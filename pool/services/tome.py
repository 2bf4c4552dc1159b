"""The one place where TOME's errors become the pool room's domain errors."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from common.errors import PoolUnavailable, UpstreamUnavailable
from tokenpool_tome.errors import TomeError, TomeUnavailable

logger = logging.getLogger(__name__)

# Retry-After when TOME gives no hint (connection refused, timeouts).
DEFAULT_RETRY_AFTER_SECONDS = 5.0


@contextmanager
def tome_errors_as(error: type[PoolUnavailable | UpstreamUnavailable], *, operation: str,
                   **log_extra: object) -> Iterator[None]:
    """Raise ``error`` (a 503 with Retry-After) for any TOME failure inside the block.

    Unreachable or overloaded TOME passes its own Retry-After hint on; a TOME that refused (a
    misconfigured namespace, a bad answer) is logged as an error, since retrying cannot help
    until someone looks, and still answers 503 to the client."""
    try:
        yield
    except TomeUnavailable as exc:
        raise error(retry_after=exc.retry_after or DEFAULT_RETRY_AFTER_SECONDS) from exc
    except TomeError as exc:
        logger.error("TOME refused %s", operation, extra={**log_extra, "error": type(exc).__name__})
        raise error(retry_after=DEFAULT_RETRY_AFTER_SECONDS) from exc
