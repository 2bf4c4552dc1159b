"""The edge (Caddy in front of stock gunicorn, as ``make run`` serves it) against hostile and broken
clients, over real sockets (issues 10 and 19).

tests/edge/conftest.py: the proxy with a 3 s read deadline (production: 10 s) in front of one gunicorn
worker with two threads. ``edge_server.app.app_requests()`` is the application server's access log:
what the proxy answers itself must not appear there.
"""
from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from tests.edge.conftest import READ_DEADLINE_SECONDS, raw_request, read_until_closed, split_response
from tests.fixtures.processes import wait_for
from tokenpool_tome import TokenPoolClient, TokenPoolUnavailable

pytestmark = pytest.mark.slow

HOST = b"Host: 127.0.0.1\r\n"
JSON = b"Content-Type: application/json\r\n"
CHUNKED_POST = b"POST /api/v1/reservations HTTP/1.1\r\n" + HOST + JSON + b"Transfer-Encoding: chunked\r\n"
LENGTH_POST = b"POST /api/v1/reservations HTTP/1.1\r\n" + HOST + JSON + b"Content-Length: 20\r\n"
CUT_OFF_WITHIN = 15.0  # generous: the deadline is 3 s


def auth(key: str) -> bytes:
    return b"Authorization: Api-Key " + key.encode() + b"\r\n"


def assert_contract_error(raw: bytes, status: int, code: str) -> dict[str, str]:
    got, headers, body = split_response(raw)
    assert got == status, raw[:400]
    assert headers["content-type"].startswith("application/json")
    payload = json.loads(body)
    assert payload["code"] == code and payload["detail"] and payload["correlation_id"]
    assert headers["x-correlation-id"] == payload["correlation_id"]
    return headers


def app_saw(server, since: int) -> list[str]:
    time.sleep(0.3)  # gunicorn writes its access line right after the response
    return server.app.app_requests()[since:]


class Stalled:
    """A socket that sent ``data`` and then nothing; ``outcome`` once the proxy cut it off."""

    def __init__(self, port: int, data: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=CUT_OFF_WITHIN + 5)
        self.sock.sendall(data)
        self.outcome: str | None = None
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()

    def _wait(self) -> None:
        started = time.monotonic()
        received = read_until_closed(self.sock, wait=CUT_OFF_WITHIN)
        closed = time.monotonic() - started < CUT_OFF_WITHIN
        self.outcome = "cut off" if closed or received.startswith(b"HTTP/1.1 4") else "still open"
        self.sock.close()


def test_stalled_clients_with_and_without_a_key_do_not_delay_another_clients_reservations(edge_server, edge_key):
    """64 stalled uploads holding a valid key of every scope (16 per scope) and 64 without a key,
    chunked and Content-Length alike, against an application server with two threads in all. Another
    client's reservations all succeed while they stall; every stalled one is cut off; the application
    server never sees any of them. (The p99 is printed, not asserted: a shared machine's timing.)"""
    from keys.models import ApiKey

    scoped = [ApiKey.objects.create_key(name=f"edge-stall-{scope}-{edge_key[:4]}", scopes=[scope])[1]
              for scope in ("reserve", "lookup", "detokenize", "pools:read")]
    before = len(edge_server.app.app_requests())
    stalled = []
    for key_header in [auth(key) for key in scoped for _ in range(2)] + [b""] * 8:
        stalled += [Stalled(edge_server.port, CHUNKED_POST + key_header + b"\r\n1\r\n{") for _ in range(4)]
        stalled += [Stalled(edge_server.port, LENGTH_POST + key_header + b"\r\n{") for _ in range(4)]
    assert len(stalled) == 128
    headers = {"Authorization": f"Api-Key {edge_key}"}
    statuses, latencies = [], []
    with httpx.Client(base_url=edge_server.url, headers=headers, timeout=CUT_OFF_WITHIN) as client:
        for _ in range(15):
            started = time.monotonic()
            statuses.append(client.post("/api/v1/reservations", json={"pool": "edge"}).status_code)
            latencies.append(time.monotonic() - started)
    print(f"reservations during the stall: max {max(latencies) * 1000:.0f} ms over {len(latencies)}")
    assert statuses == [201] * 15
    for stall in stalled:
        stall.thread.join(CUT_OFF_WITHIN + 10)
    assert [s.outcome for s in stalled] == ["cut off"] * len(stalled)
    seen = app_saw(edge_server, before)
    assert len(seen) == 15 and all('"POST /api/v1/reservations HTTP/1.1" 201' in line for line in seen)


def test_slow_headers_hold_nothing_of_the_application(edge_server):
    stalled = [Stalled(edge_server.port, b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-Slow: 1") for _ in range(16)]
    for _ in range(3):
        assert httpx.get(f"{edge_server.url}/healthz", timeout=CUT_OFF_WITHIN).status_code == 200
    for stall in stalled:
        stall.thread.join(CUT_OFF_WITHIN + 10)
    assert [s.outcome for s in stalled] == ["cut off"] * len(stalled)


def test_headers_trickled_past_the_deadline_are_dropped(edge_server):
    sock = socket.create_connection(("127.0.0.1", edge_server.port), timeout=30)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        closed = False
        for _ in range(READ_DEADLINE_SECONDS * 4 + 8):  # one header byte every 0.5 s
            time.sleep(0.5)
            try:
                sock.sendall(b"X")
            except OSError:
                closed = True
                break
        if not closed:  # the proxy may have answered (and closed) while the last bytes were in flight
            closed = read_until_closed(sock, wait=2).startswith((b"", b"HTTP/1.1 4"))
            sock.settimeout(1)
            try:
                closed = closed and sock.recv(1) == b""
            except OSError:
                closed = True
        assert closed
    finally:
        sock.close()


@pytest.mark.parametrize("size", [64 * 1024 + 1, 200_000, 1_000_000])
def test_413_closes_the_connection_and_the_next_request_succeeds(edge_server, edge_key, size):
    headers = {"Authorization": f"Api-Key {edge_key}", "Content-Type": "application/json"}
    before = len(edge_server.app.app_requests())
    with httpx.Client(base_url=edge_server.url, headers=headers, timeout=10) as client:
        for _ in range(3):
            response = client.post("/api/v1/lookup", content=b'{"internal_token": "' + b"1" * size + b'"}')
            assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
            assert response.headers["connection"] == "close"
            assert response.json()["correlation_id"] == response.headers["x-correlation-id"]
            assert client.post("/api/v1/lookup", json={"internal_token": edge_key.token}).status_code == 200
    seen = app_saw(edge_server, before)
    assert len(seen) == 3 and all('"POST /api/v1/lookup HTTP/1.1" 200' in line for line in seen)


def test_a_body_of_exactly_64_kib_passes_the_proxy(edge_server, edge_key):
    body = b'{"internal_token": "' + b"1" * (64 * 1024 - 22) + b'"}'
    assert len(body) == 64 * 1024
    response = httpx.post(f"{edge_server.url}/api/v1/lookup", content=body, timeout=10,
                          headers={"Authorization": f"Api-Key {edge_key}", "Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["code"] == "invalid_request"  # the app's answer
    assert response.headers["server"] == "gunicorn"


def test_413_on_a_raw_socket_says_close_closes_and_the_app_sees_nothing(edge_server):
    before = len(edge_server.app.app_requests())
    raw = raw_request(edge_server.port, b"POST /api/v1/lookup HTTP/1.1\r\n" + HOST + JSON
                      + b"Content-Length: 100000\r\n\r\n{", wait=5)
    headers = assert_contract_error(raw, 413, "payload_too_large")
    assert headers["connection"] == "close"
    assert app_saw(edge_server, before) == []


def test_an_oversized_chunked_body_is_413_and_the_application_sees_nothing(edge_server, edge_key):
    """A chunked body has no declared length: the limit trips while the proxy buffers, and the request
    goes no further than the proxy's relay (devtools/edge.py): the application server never sees it
    (tests/edge/test_whole_bodies.py counts it byte by byte)."""
    from pool.models import TokenPair

    reserved = TokenPair.objects.filter(status="RESERVED").count()
    before = len(edge_server.app.app_requests())
    body = b"a" * 70_000
    raw = raw_request(edge_server.port, CHUNKED_POST + auth(edge_key) + b"\r\n" + f"{len(body):x}".encode()
                      + b"\r\n" + body + b"\r\n0\r\n\r\n", wait=5)
    assert assert_contract_error(raw, 413, "payload_too_large")["connection"] == "close"
    assert app_saw(edge_server, before) == []
    assert TokenPair.objects.filter(status="RESERVED").count() == reserved


@pytest.mark.parametrize("chunks", [b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}\r\nzz\r\n\r\n", b"2\r\n{}XX0\r\n\r\n"])
def test_a_malformed_chunk_is_a_json_400_and_the_application_sees_nothing(edge_server, edge_key, chunks):
    """The contract's 400; an empty body would be a valid reservation request, so the application
    server must never be handed what the proxy could read of it."""
    from pool.models import TokenPair

    reserved = TokenPair.objects.filter(status="RESERVED").count()
    before = len(edge_server.app.app_requests())
    raw = raw_request(edge_server.port, CHUNKED_POST + auth(edge_key) + b"\r\n" + chunks, wait=5)
    assert assert_contract_error(raw, 400, "invalid_request")["connection"] == "close"
    assert app_saw(edge_server, before) == []
    assert TokenPair.objects.filter(status="RESERVED").count() == reserved


def test_a_chunked_body_reaches_the_application_whole(edge_server, edge_key):
    body = json.dumps({"internal_token": edge_key.token}).encode()
    raw = raw_request(edge_server.port, CHUNKED_POST.replace(b"/reservations", b"/lookup") + auth(edge_key)
                      + b"Connection: close\r\n\r\n" + f"{len(body):x}".encode() + b"\r\n" + body
                      + b"\r\n0\r\n\r\n", wait=5)
    status, headers, payload = split_response(raw)
    assert status == 200 and json.loads(payload)["internal_token"] == edge_key.token
    assert headers["cache-control"] == "no-store"


def test_content_length_with_transfer_encoding_cannot_smuggle_a_request(edge_server, edge_key):
    """CL + TE: the proxy's parser (Go's, RFC 9112 §6.3) frames by the chunks and drops Content-Length,
    and re-frames each request for the application server, so both agree where a request ends: the
    bytes after the last chunk are at most the client's own next request (without a key: 401)."""
    before = len(edge_server.app.app_requests())
    smuggled = b"GET /api/v1/pools/smuggled HTTP/1.1\r\n" + HOST + b"\r\n"
    body = json.dumps({"internal_token": edge_key.token}).encode()
    raw_request(edge_server.port, CHUNKED_POST.replace(b"/reservations", b"/lookup") + auth(edge_key)
                + f"Content-Length: {len(body) + 5}\r\n\r\n".encode() + f"{len(body):x}".encode() + b"\r\n" + body
                + b"\r\n0\r\n\r\n" + smuggled, wait=4)
    seen = app_saw(edge_server, before)
    assert [line for line in seen if "/api/v1/lookup" in line][0].count('" 200 ') == 1
    assert sum("/api/v1/lookup" in line for line in seen) == 1
    assert all('" 401 ' in line for line in seen if "smuggled" in line)


def test_a_bare_lf_request_is_answered(edge_server):
    """Before: no answer at all. Go's parser reads LF-only lines (RFC 9112 §2.2 allows it)."""
    raw = raw_request(edge_server.port, b"GET /healthz HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n\n", wait=5)
    status, _, body = split_response(raw)
    assert status == 200 and json.loads(body) == {"status": "ok"}


@pytest.mark.parametrize("request_bytes, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /api/v1/pools/x HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 40000 + b"\r\n\r\n", 431),
    (b"GET /api/v1/pools/x HTTP/1.1\r\n" + HOST + b"Bad Header\r\n\r\n", 400),
    (b"POST /api/v1/reservations HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: xchunked\r\n\r\n", 501),
])
def test_framing_errors_are_plain_answers_that_close_and_never_reach_the_application(edge_server, request_bytes,
                                                                                      status):
    """The proxy's HTTP parser answers these before any handler can (documented in docs/operations.md)."""
    before = len(edge_server.app.app_requests())
    raw = raw_request(edge_server.port, request_bytes, wait=5)
    got, headers, _ = split_response(raw)
    assert got == status and headers["connection"] == "close"
    assert app_saw(edge_server, before) == []


def test_http2_over_tls(tls_edge_server, edge_key):
    with httpx.Client(base_url=tls_edge_server.url, verify=tls_edge_server.ssl_context(), http2=True,
                      headers={"Authorization": f"Api-Key {edge_key}"}, timeout=10) as client:
        response = client.post("/api/v1/lookup", json={"internal_token": edge_key.token})
        assert response.http_version == "HTTP/2" and response.status_code == 200
        assert response.json()["internal_token"] == edge_key.token
        too_large = client.post("/api/v1/lookup", content=b"x" * 70_000, headers={"Content-Type": "application/json"})
        assert too_large.status_code == 413 and too_large.json()["code"] == "payload_too_large"
        assert client.get("/healthz").status_code == 200


def test_plain_http_to_the_tls_port_is_refused(tls_edge_server):
    response = httpx.get(f"http://127.0.0.1:{tls_edge_server.port}/healthz", timeout=5)
    assert response.status_code == 400 and "ok" not in response.text


def test_the_access_log_carries_the_correlation_id_and_never_the_key(edge_server, edge_key):
    given = f"edge-test-{edge_key.token}"
    response = httpx.post(f"{edge_server.url}/api/v1/lookup", json={"internal_token": edge_key.token}, timeout=10,
                          headers={"Authorization": f"Api-Key {edge_key}", "X-Correlation-ID": given})
    assert response.headers["x-correlation-id"] == given
    invalid = httpx.get(f"{edge_server.url}/healthz", headers={"X-Correlation-ID": "not valid!"}, timeout=10)
    generated = invalid.headers["x-correlation-id"]
    assert generated != "not valid!" and 1 <= len(generated) <= 128
    entries = wait_for(lambda: [e for e in edge_server.access_entries()
                                if e.get("correlation_id") in (given, generated)] or None,
                       timeout=10, message="the access-log lines")
    assert {e["correlation_id"] for e in entries} == {given, generated}
    assert edge_key not in edge_server.access_log.read_text()
    assert edge_key.split(".")[-1] not in edge_server.access_log.read_text()


def test_the_client_library_trusts_the_given_ca_bundle(tls_edge_server, edge_key):
    """``TokenPoolClient(…, verify=PATH)``: the local CA of ``TLS=1 make run`` is trusted; without it
    the same server is refused (TokenPool unreachable, no fallback configured)."""
    with TokenPoolClient(tls_edge_server.url, edge_key, pool="edge", verify=tls_edge_server.ca_bundle,
                         max_attempts=1) as client:
        pair = client.lookup(edge_key.token)
        assert pair is not None and pair.internal_token == edge_key.token
    with TokenPoolClient(tls_edge_server.url, edge_key, pool="edge", max_attempts=1) as client:
        with pytest.raises(TokenPoolUnavailable):
            client.lookup(edge_key.token)
