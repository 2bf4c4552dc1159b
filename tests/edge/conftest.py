"""Fixtures of the HTTP-edge tests: the real web server (gunicorn with TokenPool's worker, exactly
the worker class ``make run`` uses) as a subprocess on this test run's database, and raw sockets.

``edge_server`` (module): one worker with two threads, so a couple of stuck requests would be
every thread it has, and a read deadline of 3 s (production: 10 s) to keep the suite fast.
``edge_key``: a committed all-scope API key and a pool ``edge`` with pairs (transactional tests).
``raw_request(port, data, wait)``: send bytes, read until the server closes or ``wait`` passes.
"""
from __future__ import annotations

import os
import secrets
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.processes import ServerProcess

READ_DEADLINE_SECONDS = 3
# EDGE_WORKER_CLASS=gthread shows what stock gunicorn does (most of these tests fail).
WORKER_CLASS = os.environ.get("EDGE_WORKER_CLASS", "api.gunicorn_worker.TokenPoolThreadWorker")


class WebServer(ServerProcess):
    name = "gunicorn"
    stop_timeout = 15.0

    def __init__(self, *, env: dict[str, str], log_path: Path, threads: int = 2, workers: int = 1) -> None:
        super().__init__(log_path=log_path)
        self.env = env
        self.threads = threads
        self.workers = workers

    def start(self, *, timeout: float = 60.0) -> None:
        command = [sys.executable, "-m", "gunicorn", "tokenpool.wsgi", "--bind", f"127.0.0.1:{self.port}",
                   "--worker-class", WORKER_CLASS, "--workers", str(self.workers), "--threads", str(self.threads),
                   "--graceful-timeout", "2", "--no-control-socket"]
        self.launch(command, env=self.env, ready=self._ready, timeout=timeout, start_new_session=True)

    def _ready(self) -> bool:
        # An API request too: the first one imports every view; later timings must not pay it
        return (self.healthy(timeout=2.0)
                and httpx.get(f"{self.url}/api/v1/pools/none", timeout=30.0).status_code in (401, 503))


def server_env(*, database: dict[str, str], tmp: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS", "EMBEDDED_DATABASE_NAME"))}
    prometheus = tmp / "prometheus"
    prometheus.mkdir(exist_ok=True)
    env.update(database, PYTHONUNBUFFERED="1", LOG_LEVEL="INFO", PROMETHEUS_MULTIPROC_DIR=str(prometheus),
               WEB_REQUEST_READ_TIMEOUT=str(READ_DEADLINE_SECONDS), TOME_BASE_URL="http://127.0.0.1:9",
               TOME_MAX_ATTEMPTS="1")
    env.update(extra)
    return env


@contextmanager
def running_web_server(django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory, *, label: str,
                       **sizes: int) -> Iterator[WebServer]:
    """A WebServer (``sizes``: workers, threads) on this test run's database, stopped afterwards."""
    from django.db import connection

    tmp = tmp_path_factory.mktemp(label)
    with django_db_blocker.unblock():
        name = connection.settings_dict["NAME"]
    server = WebServer(env=server_env(database={"EMBEDDED_DATABASE_NAME": name}, tmp=tmp), log_path=tmp / "web.log",
                       **sizes)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def edge_server(django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory,
                ) -> Iterator[WebServer]:
    with running_web_server(django_db_blocker, tmp_path_factory, label="edge") as server:
        yield server


class EdgeKey(str):
    """The raw key (a str), plus ``token``: the internal token of a committed RESERVED pair.

    Lookups, not reservations, prove "the next request works": the server process caches pools by
    name, and each transactional test re-creates the pool under a new id."""

    token: str


@pytest.fixture
def edge_key(transactional_db: None) -> EdgeKey:
    from keys.models import ApiKey
    from pool.models import Pool
    from pool.services import pairs_insert_bulk, reservation_create
    from tests.fixtures.pool import ALL_SCOPES, fake_pairs

    pool, _ = Pool.objects.get_or_create(name="edge", defaults={"refill_enabled": False})
    pairs_insert_bulk(pool=pool, pairs=fake_pairs(20))
    api_key, raw = ApiKey.objects.create_key(name=f"edge-{secrets.token_hex(3)}", scopes=ALL_SCOPES)
    pair, _ = reservation_create(pool=pool, api_key=api_key, idempotency_key=None, owner_ref=None)
    key = EdgeKey(raw)
    key.token = pair.internal_token
    return key


def raw_request(port: int, data: bytes, *, wait: float = 10.0) -> bytes:
    """Send ``data`` on a new connection; everything received until the server closes (or ``wait``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        return read_until_closed(sock, wait=wait)


def read_until_closed(sock: socket.socket, *, wait: float) -> bytes:
    sock.settimeout(wait)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        pass
    return received


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        decoded, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            decoded, rest = decoded + rest[:size], rest[size + 2:]
        body = decoded
    return status, headers, body
