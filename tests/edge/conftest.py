"""Fixtures of the HTTP-edge tests: the real application server (stock gunicorn with
deploy/gunicorn.conf.py, as ``make run`` starts it) on this test run's database, the real edge proxy
(Caddy, devtools/edge.py's Caddyfile) in front of it, and raw sockets.

``edge_server`` (module): Caddy on a free port in front of one gunicorn worker with two threads (so a
couple of stuck requests would be every thread it has), read deadline 3 s (production: 10 s) to keep
the suite fast. ``edge_server.app_requests()`` counts the requests the application server answered
(its access log): what the proxy refused must not appear there.
``counting_edge`` (module): the same proxy in front of a CountingUpstream (tests/edge/counting_upstream.py),
which counts the connections, bytes and whole requests the proxy sends it.
``edge_key``: a committed all-scope API key and a pool ``edge`` with pairs (transactional tests).
``raw_request(port, data, wait)``: send bytes, read until the server closes or ``wait`` passes.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import ssl
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.edge import EdgeConfig, caddy_command, caddyfile, root_certificate
from tests.edge.counting_upstream import CountingUpstream
from tests.fixtures.processes import ROOT, ServerProcess

READ_DEADLINE_SECONDS = 3
GUNICORN_CONFIG = str(ROOT / "deploy" / "gunicorn.conf.py")


class WebServer(ServerProcess):
    """Stock gunicorn with the deployment's config file, straight on a loopback port (no proxy)."""

    name = "gunicorn"
    stop_timeout = 15.0

    def __init__(self, *, env: dict[str, str], log_path: Path, threads: int = 2, workers: int = 1,
                 access_log: Path | None = None) -> None:
        super().__init__(log_path=log_path)
        self.env = env
        self.threads = threads
        self.workers = workers
        self.access_log = access_log

    def start(self, *, timeout: float = 60.0) -> None:
        command = [sys.executable, "-m", "gunicorn", "tokenpool.wsgi", "--config", GUNICORN_CONFIG,
                   "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers),
                   "--threads", str(self.threads), "--graceful-timeout", "2"]
        if self.access_log is not None:
            command += ["--access-logfile", str(self.access_log)]
        self.launch(command, env=self.env, ready=self._ready, timeout=timeout, start_new_session=True)

    def _ready(self) -> bool:
        # An API request too: the first one imports every view; later timings must not pay it
        return (self.healthy(timeout=2.0)
                and httpx.get(f"{self.url}/api/v1/pools/none", timeout=30.0).status_code in (401, 503))

    def app_requests(self) -> list[str]:
        """The access-log lines of the requests the application server answered so far."""
        if self.access_log is None or not self.access_log.exists():
            return []
        return self.access_log.read_text(errors="replace").splitlines()


class EdgeProxy(ServerProcess):
    """Caddy on a free loopback port in front of ``app`` (a running WebServer, or a CountingUpstream)."""

    name = "caddy"

    def __init__(self, *, app: WebServer | CountingUpstream, tmp: Path, tls: bool = False,
                 read_timeout: float = READ_DEADLINE_SECONDS) -> None:
        super().__init__(log_path=tmp / "caddy.log")
        self.app = app
        self.tls = tls
        self.storage = tmp / "caddy"
        self.access_log = tmp / "access.log"
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        config = EdgeConfig(sites=(self.url,), upstream=f"127.0.0.1:{app.port}", storage=self.storage,
                            access_log=self.access_log, tls="internal" if tls else None, read_timeout=read_timeout)
        self.config_path = tmp / "Caddyfile"
        self.config_path.write_text(caddyfile(config))

    @property
    def ca_bundle(self) -> str:
        return str(root_certificate(self.storage))

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_bundle)

    def start(self, *, timeout: float = 30.0) -> None:
        self.launch(caddy_command(self.config_path), env=dict(os.environ), ready=self._ready, timeout=timeout,
                    start_new_session=True)

    def _ready(self) -> bool:
        if self.tls and not root_certificate(self.storage).exists():
            return False
        verify: ssl.SSLContext | bool = self.ssl_context() if self.tls else True
        return httpx.get(f"{self.url}/healthz", timeout=2.0, verify=verify).status_code == 200

    def access_entries(self) -> list[dict]:
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line.strip()]


def server_env(*, database: dict[str, str], tmp: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS", "EMBEDDED_DATABASE_NAME"))}
    prometheus = tmp / "prometheus"
    prometheus.mkdir(exist_ok=True)
    env.update(database, PYTHONUNBUFFERED="1", LOG_LEVEL="INFO", PROMETHEUS_MULTIPROC_DIR=str(prometheus),
               TOME_BASE_URL="http://127.0.0.1:9", TOME_MAX_ATTEMPTS="1")
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
                       access_log=tmp / "app-access.log", **sizes)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def running_edge(app: WebServer | CountingUpstream, tmp: Path, *, tls: bool = False) -> Iterator[EdgeProxy]:
    proxy = EdgeProxy(app=app, tmp=tmp, tls=tls)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def app_server(django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory,
               ) -> Iterator[WebServer]:
    with running_web_server(django_db_blocker, tmp_path_factory, label="edge") as server:
        yield server


@pytest.fixture(scope="module")
def edge_server(app_server: WebServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProxy]:
    with running_edge(app_server, tmp_path_factory.mktemp("caddy")) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def counting_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProxy]:
    upstream = CountingUpstream()
    upstream.start()
    try:
        with running_edge(upstream, tmp_path_factory.mktemp("caddy-counting")) as proxy:
            yield proxy
    finally:
        upstream.stop()


@pytest.fixture(scope="module")
def tls_edge_server(app_server: WebServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProxy]:
    with running_edge(app_server, tmp_path_factory.mktemp("caddy-tls"), tls=True) as proxy:
        yield proxy


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
