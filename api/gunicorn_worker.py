"""The web server's worker: gunicorn's gthread worker plus four edge guarantees of the contract,
and kept-alive connections balanced over the worker processes (5.).

``make run`` and the Docker image start gunicorn with ``--worker-class
api.gunicorn_worker.TokenPoolThreadWorker`` (docs/benchmarks.md "Web server" says why gunicorn
and not granian). Written against gunicorn 27.0.1 (pinned); tests/edge/ exercise each guarantee
over real sockets, so an upgrade that moves these internals fails there first.

1. **No read waits forever.** gthread reads headers and bodies with blocking ``recv`` and no
   timeout: eight clients that send half a request and stall hold eight threads (every thread of
   a 2×4 server) indefinitely. Here every request gets a read deadline of ``settings.WEB_REQUEST_READ_TIMEOUT``
   seconds (default 10) from its first byte: headers and body together, so a client trickling
   one byte at a time cannot stretch it either. Headers are gathered without holding a thread at
   all (``TokenPoolThreadWorker.handle``); a request past the deadline is dropped quietly while its
   headers arrive, or answered 408 by the application while its body is read.
2. **``Connection: close`` from the application is honoured.** WSGI leaves hop-by-hop headers to
   the server and gunicorn drops them, then announces keep-alive for a response whose request body
   was never read, and drops the connection while draining it (issue 10 #3). Here an application
   ``Connection: close`` makes gunicorn close after the response, and say so.
3. **The server's own error pages are the contract's JSON** (400 for an invalid request line or
   header, 414, 431, …) instead of HTML, with an ``X-Correlation-ID``. The request's path is not
   known at that point (it may not even parse), so this holds for every path.
4. **Closing never stalls the server.** gunicorn closes a connection "gracefully" (half-close,
   then up to 2 s reading until the peer closes) on its main thread, the one that accepts every
   connection: eight clients that ignore a ``Connection: close`` froze accepting for 16 s. Here
   the lingering happens on a separate thread, for any number of sockets at once.
5. **Connections spread over the processes.** The first worker to wake accepts, so one process
   used to take 12–16 of 16 connections opened in a burst and serve them all on one GIL. A worker
   holding as many connections as threads now leaves new connections to a less loaded one, and one holding two more
   than another closes a kept-alive connection after its answer so it reconnects elsewhere
   (api/accept_balance.py).
"""
from __future__ import annotations

import json
import queue
import selectors
import socket
import threading
import time
from http import HTTPStatus
from typing import Any

from django.conf import settings
from gunicorn import util
from gunicorn.http import errors as http_errors
from gunicorn.http import unreader as http_unreader
from gunicorn.http import wsgi as http_wsgi
from gunicorn.workers import gthread
from gunicorn.workers.gthread import _DEFER, ThreadWorker

from api.accept_balance import LEDGER, SHED_SETTLE_SECONDS, may_accept, should_shed
from common.errors import code_for_status
from tokenpool_tome.correlation import new_correlation_id

__all__ = ["TokenPoolThreadWorker", "RequestReadTimeout", "request_read_seconds"]

# settings.WEB_REQUEST_READ_TIMEOUT, read once the worker has loaded the application (Django's
# settings are not configured when gunicorn imports this module): TokenPoolThreadWorker.load_wsgi.
_read_seconds: float | None = None


def request_read_seconds() -> float:
    """The read deadline of a request (``settings.WEB_REQUEST_READ_TIMEOUT``), read at first use."""
    global _read_seconds
    if _read_seconds is None:
        _read_seconds = float(settings.WEB_REQUEST_READ_TIMEOUT)
    return _read_seconds


class RequestReadTimeout(http_errors.NoMoreData, TimeoutError):
    """NoMoreData: gunicorn closes such a connection quietly while parsing headers;
    TimeoutError: what the application sees while reading a body (→ 408)."""


# --- 1. a read deadline per request ------------------------------------------------------------
_socket_chunk = http_unreader.SocketUnreader.chunk


def _chunk_before_deadline(self: Any, size_hint: int | None = None) -> bytes:
    now = time.monotonic()
    deadline = getattr(self, "_request_deadline", None)
    if deadline is None:
        deadline = self._request_deadline = now + request_read_seconds()
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
def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    # ``mesg`` quotes the offending request line or header: it is not echoed (it may hold a key).
    try:
        phrase = HTTPStatus(status_int).phrase
    except ValueError:
        phrase = reason
    code = code_for_status(status_int)  # the contract's table (common.errors needs no Django)
    correlation_id = new_correlation_id()
    body = json.dumps({"code": code, "detail": f"{phrase}: the request could not be parsed.",
                       "correlation_id": correlation_id}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Cache-Control: no-store\r\nX-Correlation-ID: {correlation_id}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


util.write_error = write_json_error


# --- 4. graceful closes off the main thread --------------------------------------------------------
class Lingerer:
    """Half-closes sockets and drains them (bounded) until the peer closes, then closes them: what
    gunicorn's ``close_graceful`` does (RFC 9112 §9.6: no RST that would truncate the response),
    but for all sockets at once on one background thread instead of one by one on the main one."""

    LINGER_SECONDS = 2.0
    MAX_DRAIN = 64 * 1024

    def __init__(self) -> None:
        self._incoming: queue.SimpleQueue[socket.socket] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._started = False
        self._start_lock = threading.Lock()

    def close_later(self, sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
        except OSError:
            util.close(sock)
            return
        if not self._started:
            with self._start_lock:
                if not self._started:
                    threading.Thread(target=self._run, name="tokenpool-lingerer", daemon=True).start()
                    self._started = True
        self._incoming.put(sock)
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ)
        lingering: dict[socket.socket, tuple[float, int]] = {}
        while True:
            now = time.monotonic()
            timeout = min((deadline for deadline, _ in lingering.values()), default=now + 60) - now
            for key, _ in selector.select(timeout=max(0.0, timeout)):
                if key.fileobj is self._wake_r:
                    self._drain_wake()
                else:
                    self._drain(key.fileobj, lingering)
            self._take_incoming(selector, lingering)
            self._close_expired(selector, lingering)

    def _drain_wake(self) -> None:
        try:
            self._wake_r.recv(4096)
        except OSError:
            pass

    def _drain(self, sock: Any, lingering: dict[socket.socket, tuple[float, int]]) -> None:
        """Read what the peer still sends; its close (or too much data) ends the lingering."""
        deadline, drained = lingering[sock]
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data or drained + len(data) >= self.MAX_DRAIN:
            deadline = 0.0
        lingering[sock] = (deadline, drained + len(data))

    def _take_incoming(self, selector: selectors.BaseSelector,
                       lingering: dict[socket.socket, tuple[float, int]]) -> None:
        while True:
            try:
                sock = self._incoming.get_nowait()
            except queue.Empty:
                return
            try:
                selector.register(sock, selectors.EVENT_READ)
                lingering[sock] = (time.monotonic() + self.LINGER_SECONDS, 0)
            except (OSError, ValueError):
                util.close(sock)

    @staticmethod
    def _close_expired(selector: selectors.BaseSelector, lingering: dict[socket.socket, tuple[float, int]]) -> None:
        now = time.monotonic()
        for sock in [s for s, (deadline, _) in lingering.items() if deadline <= now]:
            del lingering[sock]
            try:
                selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            util.close(sock)


_lingerer = Lingerer()


def _close_off_main_thread(self: Any, graceful: bool = False) -> None:
    if graceful:
        _lingerer.close_later(self.sock)
    else:
        util.close(self.sock)


gthread.TConn.close = _close_off_main_thread


HEADER_BLOCK_LIMIT = 64 * 1024  # past this, gunicorn's own header limits answer (431 as JSON)


class TokenPoolThreadWorker(ThreadWorker):
    """Threads only ever parse complete header blocks.

    gthread hands a connection to a thread once its first bytes arrive, and the thread then blocks
    until the headers are complete: a client sending its headers slowly holds the thread (the
    classic slowloris). Here the thread takes what has arrived without blocking and, while the
    header block is incomplete, gives the connection back to the poller, which waits for more
    bytes holding no thread; the whole header block must arrive within the read deadline."""

    # How often a loaded worker re-reads the other workers' counts while its own count is unchanged.
    BALANCE_RECHECK_SECONDS = 0.01

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._connection_limit = 0
        self._balance_slot = -1
        self._held_back = False  # accepting paused: another worker holds fewer connections
        self._balance_checked = (-1, 0.0)  # (own count, when) of the last look at the others
        self._shed_one = False  # close the next answered kept-alive connection (accept_balance.should_shed)
        self._imbalanced_since: float | None = None  # should_shed has held since (monotonic)
        super().__init__(*args, **kwargs)

    # gthread's loop accepts while ``nr_conns < worker_connections``: while held back, the limit
    # reads as the current count, so the unmodified loop stops accepting (api/accept_balance.py).
    @property
    def worker_connections(self) -> int:
        return self.nr_conns if self._held_back else self._connection_limit

    @worker_connections.setter
    def worker_connections(self, value: int) -> None:
        self._connection_limit = value

    def load_wsgi(self) -> None:
        """gunicorn's init_process loads the application (tokenpool.wsgi: Django's settings) here,
        just before the worker's loop runs: the settings this worker reads are read now."""
        super().load_wsgi()
        request_read_seconds()
        # WEB_BALANCE_CONNECTIONS off: each worker accepts as stock gunicorn does (an operator's
        # switch, and the "before" of tests/edge/bench_web_server.sh).
        if settings.WEB_BALANCE_CONNECTIONS and self._balance_slot < 0:
            self._balance_slot = LEDGER.claim(start=self.age)

    def run(self) -> None:
        try:
            super().run()
        finally:
            LEDGER.release(self._balance_slot)

    def notify(self) -> None:
        """Each turn of the loop (before it decides whether to accept): publish this worker's
        connection count and decide whether to leave the next connection to a less loaded worker."""
        super().notify()
        open_now = self.nr_conns
        accepting = self.alive and open_now < self._connection_limit
        LEDGER.publish(self._balance_slot, open_connections=open_now if accepting else None)
        if not accepting or self._balance_slot < 0 or open_now < self.cfg.threads:
            self._held_back = self._shed_one = False
            self._imbalanced_since = None
            return
        now = time.monotonic()
        last_count, last_time = self._balance_checked
        if open_now != last_count or now - last_time >= self.BALANCE_RECHECK_SECONDS:
            self._balance_checked = (open_now, now)
            fewest = LEDGER.fewest_elsewhere(self._balance_slot)
            threads = self.cfg.threads
            self._held_back = not may_accept(open_connections=open_now, threads=threads, fewest_elsewhere=fewest)
            if not should_shed(open_connections=open_now, threads=threads, fewest_elsewhere=fewest):
                self._imbalanced_since = None
                self._shed_one = False  # the imbalance ended before a thread answered: no shed owed
            elif self._imbalanced_since is None:
                self._imbalanced_since = now
            elif now - self._imbalanced_since >= SHED_SETTLE_SECONDS:
                self._shed_one = True
                self._imbalanced_since = now  # the next shed only after another settle period

    def handle_request(self, req: Any, conn: Any) -> Any:
        if self._shed_one:  # whichever thread answers next; two racing threads may both shed (one extra reconnect)
            self._shed_one = False
            req.force_close()  # answered with Connection: close, then closed
        return super().handle_request(req, conn)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        # Held back, look again soon: the others may fill up while nothing wakes this loop.
        super().wait_for_and_dispatch_events(min(timeout, self.BALANCE_RECHECK_SECONDS) if self._held_back else timeout)

    def handle(self, conn: Any) -> Any:
        if getattr(conn, "is_http2", False):
            return super().handle(conn)  # HTTP/2 frames its own way (not enabled by TokenPool)
        ready = self._header_block_ready(conn)
        if ready is None:
            return False  # closed by the peer, or the deadline passed
        if not ready:
            return _DEFER if self.alive else False
        if not conn.is_http2:
            # The same deadline goes on into the body.
            conn.parser.unreader._request_deadline = getattr(conn, "_header_deadline", None)  # noqa: SLF001 - gunicorn internals, removed with the edge proxy (issue 19)
            conn._header_deadline = None  # noqa: SLF001 - gunicorn internals, removed with the edge proxy (issue 19)
        return super().handle(conn)

    def _header_block_ready(self, conn: Any) -> bool | None:
        try:
            conn.init()  # builds the HTTP/1 parser (once per connection)
            if conn.is_http2:
                return True
            source = conn.parser.unreader
            buffered = source.take_buffered()
            if b"\r\n\r\n" not in buffered and len(buffered) < HEADER_BLOCK_LIMIT:
                try:
                    data = conn.sock.recv(HEADER_BLOCK_LIMIT, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    data = None
                if data == b"":
                    return None if not buffered else True  # let gunicorn report a truncated request
                buffered += data or b""
            source.unread(buffered)
        except OSError:
            return None
        if not buffered:
            return False  # a kept-alive or new connection with nothing to read yet
        now = time.monotonic()
        deadline = getattr(conn, "_header_deadline", None)
        if deadline is None:
            # The deadline runs from the request's first byte; chunk() keeps it for the body.
            deadline = conn._header_deadline = now + request_read_seconds()  # noqa: SLF001 - gunicorn internals, removed with the edge proxy (issue 19)
        if b"\r\n\r\n" in buffered or len(buffered) >= HEADER_BLOCK_LIMIT:
            return True
        if now >= deadline:
            return None
        return False
