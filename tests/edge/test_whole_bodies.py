"""The application never sees a request whose body did not arrive whole (issue 19.4), counted.

The real edge proxy (Caddy with devtools/edge.py's Caddyfile, read deadline 3 s) in front of a
CountingUpstream (tests/edge/counting_upstream.py), which records every connection the proxy opens to
it, every byte it sends and every request it could read whole. For each malformed, oversized,
truncated or stalled request the upstream must receive nothing: no connection, no byte. A valid
request of each framing still arrives whole, with the client address, scheme and host the proxy set.
"""
from __future__ import annotations

import json
import socket
import time

import pytest

from tests.edge.conftest import READ_DEADLINE_SECONDS, read_until_closed, split_response

pytestmark = pytest.mark.slow

POST = b"POST /api/v1/reservations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"
BIG = b"a" * 70_000
CL_AND_TE = POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"


def _chunks(size: int, total: int) -> bytes:
    return b"".join(f"{size:x}\r\n".encode() + b"a" * size + b"\r\n" for _ in range(total // size)) + b"0\r\n\r\n"


# name: (request bytes, how the client ends, the status the client gets or None when it is gone/cut off)
BROKEN = {
    "chunked-over-limit-one-chunk": (CHUNKED + f"{len(BIG):x}\r\n".encode() + BIG + b"\r\n0\r\n\r\n", "wait", 413),
    "chunked-over-limit-16k-chunks": (CHUNKED + _chunks(16 * 1024, 200_000), "wait", 413),
    "chunked-bad-hex-size": (CHUNKED + b"zz\r\n{}\r\n0\r\n\r\n", "wait", 400),
    "chunked-bad-hex-after-a-valid-chunk": (CHUNKED + b"2\r\n{}\r\nzz\r\n\r\n", "wait", 400),
    "chunked-missing-crlf-after-data": (CHUNKED + b"2\r\n{}XX0\r\n\r\n", "wait", 400),
    "chunked-bare-lf-chunk-lines": (CHUNKED + b"2\n{}\n0\n\n", "wait", 400),
    "content-length-and-chunked-bad-chunk": (CL_AND_TE + b"\r\nzz\r\n\r\n", "wait", 400),
    "bare-lf-headers-bad-chunk": (CHUNKED.replace(b"\r\n", b"\n") + b"zz\n{}\n0\n\n", "wait", 400),
    "chunked-truncated-then-closed": (CHUNKED + b"10\r\n{}", "half-close", None),
    "chunked-truncated-before-last-chunk-then-closed": (CHUNKED + b"2\r\n{}\r\n", "half-close", None),
    "content-length-truncated-then-closed": (POST + b"Content-Length: 20\r\n\r\n{}", "half-close", None),
    "chunked-stalled-past-the-deadline": (CHUNKED + b"2\r\n{}\r\n", "stall", None),
    "content-length-stalled-past-the-deadline": (POST + b"Content-Length: 20\r\n\r\n{}", "stall", None),
    "declared-length-over-limit": (POST + b"Content-Length: 70000\r\n\r\n" + b"a" * 1000, "wait", 413),
}


def exchange(port: int, data: bytes, ending: str) -> tuple[bytes, float]:
    """Send ``data``; half-close (``half-close``) or not; what came back and how long until closed."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        if ending == "half-close":
            sock.shutdown(socket.SHUT_WR)
        received = read_until_closed(sock, wait=READ_DEADLINE_SECONDS * 4)
    return received, time.monotonic() - started


def settled(upstream, before: tuple[int, int, int]) -> tuple[int, int, int]:
    """What the upstream received since ``before`` (connections, bytes, whole requests), once quiet."""
    time.sleep(0.5)
    after = upstream.snapshot()
    return after[0] - before[0], after[1] - before[1], after[2] - before[2]


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_body_that_did_not_arrive_whole_never_reaches_the_application(counting_edge, name):
    data, ending, status = BROKEN[name]
    upstream = counting_edge.app
    before = upstream.snapshot()
    received, took = exchange(counting_edge.port, data, ending)
    assert settled(upstream, before) == (0, 0, 0), f"{name}: the upstream received part of it"
    if status is not None:
        got, headers, body = split_response(received)
        assert got == status and headers["connection"] == "close", received[:300]
        assert json.loads(body)["code"] == {400: "invalid_request", 413: "payload_too_large"}[status]
    if ending == "stall":  # cut off at the read deadline (closed, or answered 4xx), not by the client giving up
        assert took < READ_DEADLINE_SECONDS * 4 - 1 or received.startswith(b"HTTP/1.1 4"), received[:300]


@pytest.mark.parametrize("name, data, body", [
    ("content-length", POST + b"Content-Length: 2\r\nConnection: close\r\n\r\n{}", b"{}"),
    ("chunked", CHUNKED.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + b"2\r\n{}\r\n3\r\n   \r\n0\r\n\r\n",
     b"{}   "),
    ("content-length-and-chunked",
     CL_AND_TE + b"Connection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n", b"{}"),
    ("bare-lf-headers", POST.replace(b"\r\n", b"\n") + b"Content-Length: 2\nConnection: close\n\n{}", b"{}"),
    ("exactly-the-limit-chunked",
     CHUNKED.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + _chunks(16 * 1024, 64 * 1024), b"a" * 65536),
])
def test_a_whole_request_arrives_whole_with_the_proxys_forwarded_headers(counting_edge, name, data, body):
    upstream = counting_edge.app
    before = upstream.snapshot()
    received, _ = exchange(counting_edge.port, data, "wait")
    status, _, payload = split_response(received)
    assert status == 200 and json.loads(payload)["received"] == len(body), received[:300]
    assert settled(upstream, before)[2] == 1
    request = upstream.requests()[-1]
    assert request.request_line == "POST /api/v1/reservations HTTP/1.1" and request.body == body
    assert request.headers["x-forwarded-for"] == "127.0.0.1"  # the client's address, through the relay too
    assert request.headers["x-forwarded-proto"] == "http" and request.headers["x-forwarded-host"] == "127.0.0.1"
    assert request.headers["x-correlation-id"]
