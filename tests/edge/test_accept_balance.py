"""Kept-alive connections spread over the worker processes (api/accept_balance.py).

Unit tests of the rule and of the shared table (across a real ``fork``), then a real gunicorn with
TokenPool's worker, 2 processes × 4 threads: 16 connections opened one after the other, each kept
alive after a request, must end up 8/8 or close to it. Before the ledger the same test saw 4/12,
5/11, 16/0, 4/12 and 3/13 in five trials.
"""
from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from api.accept_balance import (
    STALE_SECONDS,
    ConnectionLedger,
    may_accept,
    should_shed,
)
from devtools.netutil import connections_per_child
from tests.edge.conftest import WebServer, running_web_server, split_response
from tests.fixtures.processes import wait_for

# ---- the rule --------------------------------------------------------------------------------------

def test_a_worker_with_an_idle_thread_always_accepts():
    assert may_accept(open_connections=3, threads=4, fewest_elsewhere=0)


def test_a_busy_worker_accepts_only_while_no_other_worker_holds_fewer():
    assert not may_accept(open_connections=5, threads=4, fewest_elsewhere=4)
    assert may_accept(open_connections=5, threads=4, fewest_elsewhere=5)  # ties accept: the backlog drains
    assert may_accept(open_connections=9, threads=4, fewest_elsewhere=None)  # alone (or the others full)


def test_a_worker_sheds_a_connection_only_while_it_queues_and_holds_two_more_than_another():
    assert should_shed(open_connections=10, threads=4, fewest_elsewhere=6)
    assert should_shed(open_connections=6, threads=4, fewest_elsewhere=4)
    assert not should_shed(open_connections=9, threads=4, fewest_elsewhere=8)  # one apart: leave it
    assert not should_shed(open_connections=4, threads=4, fewest_elsewhere=0)  # an idle thread: no queue
    assert not should_shed(open_connections=16, threads=4, fewest_elsewhere=None)  # nowhere to go


# ---- the shared table --------------------------------------------------------------------------------

def test_counts_published_by_a_forked_process_are_read_by_its_parent():
    ledger = ConnectionLedger(slots=8)
    mine = ledger.claim(start=0)
    child = os.fork()
    if child == 0:  # the child: what a gunicorn worker does, then exit without cleaning up
        try:
            ledger.publish(ledger.claim(start=1), open_connections=5)
        finally:
            os._exit(0)
    _, status = os.waitpid(child, 0)
    assert status == 0
    assert ledger.fewest_elsewhere(mine) == 5


def test_own_record_not_accepting_stale_and_released_records_are_ignored():
    ledger = ConnectionLedger(slots=8)
    mine = ledger.claim(start=0)
    ledger.publish(mine, open_connections=0)
    assert ledger.fewest_elsewhere(mine) is None  # its own record does not count

    other = ledger.claim(start=1)
    assert other != mine
    ledger.publish(other, open_connections=None)  # draining or at its limit
    assert ledger.fewest_elsewhere(mine) is None
    ledger.publish(other, open_connections=2)
    assert ledger.fewest_elsewhere(mine) == 2
    ledger.release(other)
    assert ledger.fewest_elsewhere(mine) is None

    # A worker that died without releasing: its heartbeat stops, and after STALE_SECONDS its record
    # neither counts nor blocks a new worker from claiming it.
    dead = ledger.claim(start=2)
    ledger._write(dead, 999_999, 1, time.monotonic() - STALE_SECONDS - 1)
    assert ledger.fewest_elsewhere(mine) is None
    assert ledger.claim(start=2) == dead


def test_claims_skip_live_records_and_fail_softly_when_full():
    ledger = ConnectionLedger(slots=2)
    first = ledger.claim(start=0)
    ledger._write(1, 999_999, 0, time.monotonic())  # another live worker's record
    assert first == 0
    assert ledger.claim(start=1) == 0  # slot 1 is live and not ours: the search moves on to our own
    ledger._write(0, 999_998, 0, time.monotonic())
    assert ledger.claim(start=0) == -1  # full: this worker accepts as stock gunicorn does
    ledger.publish(-1, open_connections=3)  # and publishing is a no-op, not an error
    assert ledger.fewest_elsewhere(-1) == 0


# ---- a real server ---------------------------------------------------------------------------------

def _established_per_worker(server: WebServer) -> dict[int, int]:
    return connections_per_child(parent_pid=server.pid, port=server.port)


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _open_kept_alive(port: int, count: int) -> list[socket.socket]:
    """``count`` connections, opened one after the other, each answered once and kept open."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sockets.append(sock)
        sock.sendall(HEALTHZ)
    for sock in sockets:
        assert _read_answer(sock)[0] == 200
    return sockets


def _read_answer(sock: socket.socket) -> tuple[int, bool]:
    """One response: its status and whether the server said it closes the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed without answering"
        data += chunk
    status, headers, body = split_response(data)
    missing = int(headers.get("content-length", "0")) - len(body)
    while missing > 0:  # read the rest, so the next answer on this connection starts clean
        chunk = sock.recv(missing)
        assert chunk, "the server closed mid-answer"
        missing -= len(chunk)
    return status, headers.get("connection", "").lower() == "close"


@pytest.fixture(scope="module")
def two_worker_server(django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory,
                      ) -> Iterator[WebServer]:
    with running_web_server(django_db_blocker, tmp_path_factory, label="balance", workers=2, threads=4) as server:
        # Both workers must be in their loops (the readiness check reached one of them): open
        # connections until each worker holds some.
        def both_serving() -> bool:
            sockets = _open_kept_alive(server.port, 8)
            try:
                counts = _established_per_worker(server)
                return len(counts) == 2 and min(counts.values()) > 0
            finally:
                for sock in sockets:
                    sock.close()

        wait_for(both_serving, timeout=60, interval=0.5, message="both workers accepting")
        yield server


@pytest.mark.slow
def test_sixteen_kept_alive_connections_are_spread_evenly_over_two_workers(two_worker_server):
    server = two_worker_server
    for _ in range(3):
        wait_for(lambda: sum(_established_per_worker(server).values()) == 0, timeout=10,
                 message="the previous trial's connections closed")
        sockets = _open_kept_alive(server.port, 16)
        try:
            counts = sorted(_established_per_worker(server).values())
            assert sum(counts) == 16 and counts[-1] - counts[0] <= 2, counts
        finally:
            for sock in sockets:
                sock.close()


@pytest.mark.slow
def test_connections_move_off_a_worker_that_holds_too_many(two_worker_server):
    """One worker frozen (SIGSTOP) until its record goes stale: the other takes all 16 connections.
    Once it runs again, clients that keep sending (and reconnect when told ``Connection: close``,
    as any HTTP/1.1 client does) end up spread evenly, with every request answered 200."""
    server = two_worker_server
    wait_for(lambda: sum(_established_per_worker(server).values()) == 0, timeout=10,
             message="the previous test's connections closed")
    frozen = min(_established_per_worker(server))
    os.kill(frozen, signal.SIGSTOP)
    try:
        time.sleep(STALE_SECONDS + 0.5)
        sockets = _open_kept_alive(server.port, 16)
    finally:
        os.kill(frozen, signal.SIGCONT)
    try:
        assert _established_per_worker(server)[frozen] == 0
        statuses, deadline = [], time.monotonic() + 60  # 8 sheds, one per SHED_SETTLE_SECONDS
        while True:
            counts = sorted(_established_per_worker(server).values())
            if counts[-1] - counts[0] <= 2 or time.monotonic() > deadline:
                break
            for index, sock in enumerate(sockets):
                sock.sendall(HEALTHZ)
                status, closing = _read_answer(sock)
                statuses.append(status)
                if closing:  # shed: reconnect, as a client's connection pool would
                    sock.close()
                    sockets[index] = _open_kept_alive(server.port, 1)[0]
        assert counts[-1] - counts[0] <= 2 and sum(counts) == 16, counts
        assert set(statuses) == {200}
    finally:
        for sock in sockets:
            sock.close()
