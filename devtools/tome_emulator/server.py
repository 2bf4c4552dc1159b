"""HTTP front of the emulator: the stdlib ``ThreadingHTTPServer`` around ``app.EmulatorApp``.

HTTP/1.1 keep-alive (every response has Content-Length), one daemon thread per client connection,
Nagle off so small responses are not held back.
"""
from __future__ import annotations

import json
import logging
import signal
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from devtools.tome_emulator.app import (
    MAX_BODY_BYTES,
    ApiError,
    EmulatorApp,
    EmulatorConfig,
    Request,
    Response,
    _error,
    _invalid,
)
from devtools.tome_emulator.faults import Faults, Telemetry
from devtools.tome_emulator.vault import Vault
from tokenpool_tome.correlation import accept_or_generate

logger = logging.getLogger("tome.emulator")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries Content-Length
    disable_nagle_algorithm = True
    timeout = 75  # idle keep-alive connections give their thread back after this long
    server: EmulatorServer

    def version_string(self) -> str:
        return "TOME-emulator/1"

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET  # noqa: N815

    def _dispatch(self) -> None:
        started = time.perf_counter()
        correlation_id = accept_or_generate(self.headers.get("X-Correlation-ID"))
        split = urlsplit(self.path)
        response = self._read_and_handle(split.path, split.query, correlation_id)
        if response.hold_seconds:
            time.sleep(response.hold_seconds)
        # Logged before the answer leaves, so whoever holds the answer can already find the line.
        logger.info(
            "tome request",
            extra={"method": self.command, "path": split.path, "status": response.status,
                   "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                   "namespace": response.namespace, "operation": response.operation,
                   "items": response.items, "fault": response.fault, "correlation_id": correlation_id},
        )
        self._send(response, correlation_id)

    def _read_and_handle(self, path: str, query: str, correlation_id: str) -> Response:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return _error(ApiError(411, "length_required", "Send the body with Content-Length."))
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            return _error(_invalid("Invalid Content-Length."))
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body makes the connection unusable
            return _error(ApiError(413, "payload_too_large", f"Bodies are limited to {MAX_BODY_BYTES} bytes."))
        body = self.rfile.read(length) if length else b""
        request = Request(self.command, path, parse_qs(query), self.headers, body, correlation_id)
        try:
            return self.server.app.handle(request)
        except Exception:  # noqa: BLE001 - a bug must answer 500, not kill the connection silently
            logger.exception("unhandled error", extra={"path": path, "correlation_id": correlation_id})
            return _error(ApiError(500, "internal_error", "Unexpected emulator error."))

    def _send(self, response: Response, correlation_id: str) -> None:
        payload = json.dumps(response.body, separators=(",", ":")).encode("utf-8")
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("X-Correlation-ID", correlation_id)
            for name, value in response.headers.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":  # a HEAD answer announces the length but carries no body
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # caller gave up (e.g. injected timeout)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        # Our own line per request replaces the stdlib's; protocol-level errors go to debug.
        logger.debug("http: " + format, *args)


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], app: EmulatorApp) -> None:
        self.app = app
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can stall start-up.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    @property
    def port(self) -> int:
        return self.server_address[1]


def serve(*, config: EmulatorConfig, vault: Vault, faults: Faults, namespaces: list[tuple[str, str, str]],
          stop: threading.Event | None = None,
          ready: Callable[[EmulatorServer], None] | None = None) -> None:
    """Open the vault, ensure ``namespaces`` (name, format, prefix), serve until SIGTERM/SIGINT.

    With ``stop`` given (embedding in a thread), no signal handler is installed: set it to stop."""
    vault.open()
    try:
        for name, token_format, prefix in namespaces:
            namespace, created = vault.namespace_ensure(name=name, token_format=token_format, prefix=prefix)
            logger.info("namespace ready", extra={"namespace": name, "format": namespace.format,
                                                   "prefix": namespace.prefix, "newly_created": created})
        app = EmulatorApp(config=config, vault=vault, faults=faults, telemetry=Telemetry())
        server = EmulatorServer((config.host, config.port), app)
        if stop is None:
            stop = threading.Event()
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stop.set())
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="tome-emulator", daemon=True)
        thread.start()
        logger.info("TOME emulator listening", extra={"url": f"http://{config.host}:{server.port}",
                                                       "faults": asdict(faults.snapshot())})
        if ready is not None:
            ready(server)
        while not stop.wait(0.5):
            pass
        logger.info("TOME emulator stopping")
        server.shutdown()
        server.server_close()
    finally:
        vault.close()


__all__ = ["EmulatorApp", "EmulatorConfig", "EmulatorServer", "serve"]
