"""The web server layer against hostile and broken clients, over real sockets (issue 10 #2-#4).

A real gunicorn with TokenPool's worker (tests/edge/conftest.py: 1 worker × 2 threads, read
deadline 3 s). "Answered" below means answered while the misbehaving connections are still open.
"""
from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.edge.conftest import READ_DEADLINE_SECONDS, raw_request, read_until_closed, split_response

pytestmark = pytest.mark.slow

HOST = b"Host: 127.0.0.1\r\n"
CHUNKED_POST = (b"POST /api/v1/reservations HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n")


def open_stalled(port: int, data: bytes, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(data)
        sockets.append(sock)
    return sockets


def assert_contract_error(raw: bytes, status: int, code: str) -> dict[str, str]:
    got, headers, body = split_response(raw)
    assert got == status, raw[:400]
    assert headers["content-type"].startswith("application/json")
    payload = json.loads(body)
    assert payload["code"] == code and payload["detail"] and payload["correlation_id"]
    return headers


def healthz(url: str) -> int:
    # 2 s: far less than the read deadline, so an answer proves no thread was waiting on the stalls.
    return httpx.get(f"{url}/healthz", timeout=2.0).status_code


def assert_each_refused_and_server_free(server, stalled: list, status: int, code: str, *, wait: float) -> None:
    """Every stalled socket gets the contract error and ``Connection: close``; then /healthz answers."""
    try:
        for sock in stalled:
            headers = assert_contract_error(read_until_closed(sock, wait=wait), status, code)
            assert headers["connection"] == "close"
        assert healthz(server.url) == 200
    finally:
        for sock in stalled:
            sock.close()


def test_stalled_uploads_without_a_key_are_refused_before_the_body_is_read(edge_server):
    """Eight sockets: chunked headers, one byte of body, then silence. Before: each held a thread
    (the body was read before authentication), and /healthz timed out."""
    stalled = open_stalled(edge_server.port, CHUNKED_POST + b"\r\n5\r\na", 8)
    assert_each_refused_and_server_free(edge_server, stalled, 401, "not_authenticated",
                                        wait=READ_DEADLINE_SECONDS - 1)


def test_slow_headers_hold_no_thread(edge_server):
    stalled = open_stalled(edge_server.port, b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-Slow: 1", 8)
    try:
        for _ in range(3):
            assert healthz(edge_server.url) == 200
    finally:
        for sock in stalled:
            sock.close()


def test_a_stalled_upload_with_a_valid_key_is_cut_off_at_the_read_deadline(edge_server, edge_key):
    request = CHUNKED_POST + b"Authorization: Api-Key " + edge_key.encode() + b"\r\n\r\n5\r\na"
    stalled = open_stalled(edge_server.port, request, 2)  # both threads of the server
    assert_each_refused_and_server_free(edge_server, stalled, 408, "request_timeout",
                                        wait=READ_DEADLINE_SECONDS + 10)


def test_headers_trickled_past_the_deadline_are_dropped(edge_server):
    sock = socket.create_connection(("127.0.0.1", edge_server.port), timeout=30)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        closed = False
        for _ in range(READ_DEADLINE_SECONDS * 4 + 8):  # one header byte every 0.5 s (under keep-alive's 2 s)
            time.sleep(0.5)
            try:
                sock.sendall(b"X")
            except OSError:
                closed = True
                break
        if not closed:
            sock.settimeout(1)
            closed = sock.recv(100) == b""
        assert closed
    finally:
        sock.close()


@pytest.mark.parametrize("size", [64 * 1024 + 1, 200_000, 1_000_000])
def test_413_closes_the_connection_and_the_next_request_succeeds(edge_server, edge_key, size):
    """Before: 413 announced keep-alive, then the connection was dropped under the next request."""
    headers = {"Authorization": f"Api-Key {edge_key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=edge_server.url, headers=headers, timeout=10) as client:
        for _ in range(3):
            response = client.post("/api/v1/lookup", content=b'{"internal_token": "' + b"1" * size + b'"}')
            assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
            assert response.headers["connection"] == "close"
            assert client.post("/api/v1/lookup", json={"internal_token": edge_key.token}).status_code == 200


def test_413_on_a_raw_socket_says_close_and_closes(edge_server):
    raw = raw_request(edge_server.port, b"POST /api/v1/lookup HTTP/1.1\r\n" + HOST
                      + b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{", wait=5)
    headers = assert_contract_error(raw, 413, "payload_too_large")
    assert headers["connection"] == "close"


def test_a_malformed_chunk_is_a_json_400(edge_server, edge_key):
    """Before: Django's HTML 500 page and an ERROR line with a stack."""
    raw = raw_request(edge_server.port, CHUNKED_POST + b"Authorization: Api-Key " + edge_key.encode()
                      + b"\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", wait=5)
    headers = assert_contract_error(raw, 400, "invalid_request")
    assert headers["connection"] == "close"
    assert "Internal Server Error" not in edge_server.log_text()


def test_a_chunked_body_is_read_after_the_key(edge_server, edge_key):
    body = json.dumps({"internal_token": edge_key.token}).encode()
    raw = raw_request(edge_server.port, CHUNKED_POST.replace(b"/reservations", b"/lookup")
                      + b"Authorization: Api-Key " + edge_key.encode()
                      + b"\r\nConnection: close\r\n\r\n" + f"{len(body):x}".encode() + b"\r\n" + body
                      + b"\r\n0\r\n\r\n", wait=5)
    status, headers, payload = split_response(raw)
    assert status == 200 and json.loads(payload)["internal_token"] == edge_key.token
    assert headers["cache-control"] == "no-store"


@pytest.mark.parametrize("request_bytes, status, code", [
    (b"GARBAGE\r\n\r\n", 400, "invalid_request"),
    (b"GET /api/v1/pools/" + b"a" * 9000 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414, "request_uri_too_long"),
    (b"GET /api/v1/pools/x HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n", 431,
     "request_header_fields_too_large"),
    (b"GET /api/v1/pools/x HTTP/1.1\r\n" + HOST + b"Bad Header\r\n\r\n", 400, "invalid_request"),
])
def test_the_servers_own_framing_errors_are_contract_json(edge_server, request_bytes, status, code):
    """Before: gunicorn's HTML error pages."""
    headers = assert_contract_error(raw_request(edge_server.port, request_bytes, wait=5), status, code)
    assert headers["x-correlation-id"]
