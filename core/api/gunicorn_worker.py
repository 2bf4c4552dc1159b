"""The web server's worker: gunicorn's gthread worker plus three edge guarantees of the contract.

``make run`` and the Docker image start gunicorn with ``--worker-class
core.api.gunicorn_worker.TokenPoolThreadWorker`` (docs/benchmarks.md "Web server" says why gunicorn
and not granian). Written against gunicorn 27.0.1 (pinned); tests/edge/ exercise each guarantee
over real sockets, so an upgrade that moves these internals fails there first.

1. **No read waits forever.** gthread reads headers and bodies with blocking ``recv`` and no
   timeout: eight clients that send half a request and stall hold eight threads (every thread of
   a 2×4 server) indefinitely. Here every request gets a read deadline of ``WEB_REQUEST_READ_TIMEOUT``
   seconds (default 10) from its first ``recv``: headers and body together, so a client trickling
   one byte at a time cannot stretch it either. A request that misses it is dropped quietly while
   its headers are read, or answered 408 by the application while its body is read.
2. **``Connection: close`` from the application is honoured.** WSGI leaves hop-by-hop headers to
   the server and gunicorn drops them, then announces keep-alive for a response whose request body
   was never read, and drops the connection while draining it (issue 10 #3). Here an application
   ``Connection: close`` makes gunicorn close after the response, and say so.
3. **The server's own error pages are the contract's JSON** (400 for an invalid request line or
   header, 414, 431, …) instead of HTML, with an ``X-Correlation-ID``. The request's path is not
   known at that point (it may not even parse), so this holds for every path.
"""
from __future__ import annotations

import json
import os
import time
from http import HTTPStatus
from typing import Any

from gunicorn import util
from gunicorn.http import errors as http_errors
from gunicorn.http import unreader as http_unreader
from gunicorn.http import wsgi as http_wsgi
from gunicorn.workers.gthread import ThreadWorker

from tokenpool_tome.correlation import new_correlation_id

__all__ = ["TokenPoolThreadWorker", "REQUEST_READ_SECONDS", "RequestReadTimeout"]

REQUEST_READ_SECONDS = float(os.environ.get("WEB_REQUEST_READ_TIMEOUT", "10"))


class RequestReadTimeout(http_errors.NoMoreData, TimeoutError):
    """NoMoreData: gunicorn closes such a connection quietly while parsing headers;
    TimeoutError: what the application sees while reading a body (→ 408)."""


# --- 1. a read deadline per request ------------------------------------------------------------
_socket_chunk = http_unreader.SocketUnreader.chunk


def _chunk_before_deadline(self: Any, size_hint: int | None = None) -> bytes:
    now = time.monotonic()
    deadline = getattr(self, "_request_deadline", None)
    if deadline is None:
        deadline = self._request_deadline = now + REQUEST_READ_SECONDS
    remaining = deadline - now
    if remaining <= 0:
        raise RequestReadTimeout()
    prior = self.sock.gettimeout()
    # gunicorn's own bounded drain sets a shorter timeout sometimes: keep the shorter one.
    self.sock.settimeout(remaining if prior is None else min(prior, remaining))
    try:
        return _socket_chunk(self, size_hint)
    except TimeoutError:
        raise RequestReadTimeout() from None
    finally:
        # Restored so the response write is not cut off by a deadline meant for reading.
        self.sock.settimeout(prior)


http_unreader.SocketUnreader.chunk = _chunk_before_deadline


# --- 2. Connection: close from the application -------------------------------------------------
_process_headers = http_wsgi.Response.process_headers


def _process_headers_honouring_close(self: Any, headers: list[tuple[str, str]]) -> None:
    for name, value in headers:
        if isinstance(name, str) and name.lower() == "connection" and str(value).strip().lower() == "close":
            self.force_close()
    _process_headers(self, headers)


http_wsgi.Response.process_headers = _process_headers_honouring_close


# --- 3. JSON error pages -------------------------------------------------------------------------
_CODES = {400: "invalid_request", 403: "permission_denied", 500: "internal_error"}


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    # ``mesg`` quotes the offending request line or header: it is not echoed (it may hold a key).
    try:
        phrase = HTTPStatus(status_int).phrase
    except ValueError:
        phrase = reason
    code = _CODES.get(status_int) or phrase.lower().replace(" ", "_").replace("-", "_")
    correlation_id = new_correlation_id()
    body = json.dumps({"code": code, "detail": f"{phrase}: the request could not be parsed.",
                       "correlation_id": correlation_id}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Cache-Control: no-store\r\nX-Correlation-ID: {correlation_id}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


util.write_error = write_json_error


class TokenPoolThreadWorker(ThreadWorker):
    def handle(self, conn: Any) -> Any:
        parser = getattr(conn, "parser", None)
        source = getattr(parser, "unreader", None)
        if source is not None:
            source._request_deadline = None  # a new request on a kept-alive connection: a new deadline
        return super().handle(conn)
