"""A counting stand-in for the application server: a raw TCP server that records every connection the
edge proxy opens to it, every byte the proxy sends on it, and every complete request it could parse.

It answers each request it parses whole with ``200`` and a JSON body naming the body length it
received (keep-alive), so a valid request through the proxy gets an answer. What matters to the tests
is what it *received*: a request whose body did not arrive whole at the proxy must leave no byte here.
"""
from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field

__all__ = ["CountingUpstream", "Received"]


@dataclass
class Received:
    """One request the upstream read whole: request line, headers (lower-case names) and body."""

    request_line: str
    headers: dict[str, str]
    body: bytes


@dataclass
class _Counts:
    connections: int = 0
    raw: list[bytes] = field(default_factory=list)  # the bytes of each connection, in accept order
    requests: list[Received] = field(default_factory=list)


class CountingUpstream:
    """``start()`` listens on a free loopback port (``port``); ``stop()`` ends it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.counts = _Counts()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.listener.close()

    def snapshot(self) -> tuple[int, int, int]:
        """(connections accepted, bytes received, requests parsed whole) so far."""
        with self.lock:
            return (self.counts.connections, sum(len(chunk) for chunk in self.counts.raw),
                    len(self.counts.requests))

    def requests(self) -> list[Received]:
        with self.lock:
            return list(self.counts.requests)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.counts.connections += 1
                index = len(self.counts.raw)
                self.counts.raw.append(b"")
            threading.Thread(target=self._serve, args=(conn, index), daemon=True).start()

    def _serve(self, conn: socket.socket, index: int) -> None:
        buffer = b""
        with conn:
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                with self.lock:
                    self.counts.raw[index] += chunk
                buffer += chunk
                while (parsed := _parse(buffer)) is not None:
                    request, buffer = parsed
                    with self.lock:
                        self.counts.requests.append(request)
                    body = json.dumps({"status": "ok", "received": len(request.body)}).encode()
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


def _parse(buffer: bytes) -> tuple[Received, bytes] | None:
    """One complete request off the front of ``buffer`` and the rest, or None while it is incomplete."""
    head, separator, rest = buffer.partition(b"\r\n\r\n")
    if not separator:
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(rest)
        if body is None:
            return None
        return Received(lines[0], headers, body[0]), body[1]
    length = int(headers.get("content-length", "0"))
    if len(rest) < length:
        return None
    return Received(lines[0], headers, rest[:length]), rest[length:]


def _dechunk(data: bytes) -> tuple[bytes, bytes] | None:
    body = b""
    while True:
        size_line, separator, data = data.partition(b"\r\n")
        if not separator:
            return None
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            _, separator, data = data.partition(b"\r\n")  # no trailers from the proxy
            return (body, data) if separator else None
        if len(data) < size + 2:
            return None
        body, data = body + data[:size], data[size + 2:]
