"""A lost database (issue 10 #5): 503 ``database_unavailable`` with ``Retry-After`` from the real web
server, at most one ERROR line with a stack per interval, and recovery without a restart.

The server reaches PostgreSQL through a TCP proxy this test can cut and restore."""
from __future__ import annotations

import json
import selectors
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.edge.conftest import WebServer, server_env

pytestmark = pytest.mark.slow


class CuttableProxy:
    """127.0.0.1:<port> → the database's socket; ``cut()`` drops every connection and refuses new
    ones (a lost database as a client sees it), ``restore()`` accepts again on the same port."""

    def __init__(self, target: str | tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def _connect_target(self) -> socket.socket:
        if isinstance(self.target, str):
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            return upstream
        return socket.create_connection(self.target)

    def restore(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stop.clear()
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        self._stop.set()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked on it (Linux)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            for client, upstream in self._pairs:
                for sock in (client, upstream):
                    try:
                        sock.close()
                    except OSError:
                        pass
            self._pairs.clear()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = self._connect_target()
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pump(client: socket.socket, upstream: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        try:
            while True:
                for key, _ in selector.select(timeout=1.0):
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in (client, upstream):
                try:
                    sock.close()
                except OSError:
                    pass


@pytest.fixture
def database_behind_proxy(transactional_db: None) -> CuttableProxy:
    from django.db import connection

    params = connection.settings_dict
    host, port = params.get("HOST") or "localhost", int(params.get("PORT") or 5432)
    proxy = CuttableProxy(f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port))
    proxy.restore()
    yield proxy
    proxy.cut()


def test_a_lost_database_is_503_database_unavailable_then_recovers(database_behind_proxy, edge_key, make_api_key,
                                                                    tmp_path: Path):
    from django.db import connection

    params = connection.settings_dict
    url = f"postgresql://{params.get('USER') or 'postgres'}@127.0.0.1:{database_behind_proxy.port}/{params['NAME']}"
    server = WebServer(env=server_env(database={"DATABASE_URL": url}, tmp=tmp_path, DATABASE_ERROR_LOG_SECONDS="30"),
                       log_path=tmp_path / "web.log")
    server.start()
    _, unseen_key = make_api_key()  # never verified by the server: its lookup needs the database
    try:
        client = httpx.Client(base_url=server.url, timeout=20)
        known = {"Authorization": f"Api-Key {edge_key}"}
        assert client.post("/api/v1/lookup", json={"internal_token": edge_key.token}, headers=known).status_code == 200

        database_behind_proxy.cut()
        answers = []
        for _round in range(8):
            answers.append(client.post("/api/v1/lookup", json={"internal_token": edge_key.token}, headers=known))
            answers.append(client.post("/api/v1/reservations", json={},
                                       headers={"Authorization": f"Api-Key {unseen_key}"}))
            answers.append(client.get("/api/v1/pools/edge", headers={"Authorization": f"Api-Key {unseen_key}"}))
        for response in answers:
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "database_unavailable"
            assert int(response.headers["Retry-After"]) >= 1
            assert response.headers["cache-control"] == "no-store"
        log_lines = [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]
        stacks = [line for line in log_lines if "exc_stack" in line]
        assert len(stacks) == 1, stacks  # one line with a stack per 30 s, not one per request
        assert stacks[0]["event"] == "database unavailable"

        database_behind_proxy.restore()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # recovery: the next request after the database is back works
            response = client.post("/api/v1/lookup", json={"internal_token": edge_key.token}, headers=known)
            if response.status_code == 200:
                break
            time.sleep(0.5)
        assert response.status_code == 200
        assert client.get("/api/v1/pools/edge", headers={"Authorization": f"Api-Key {unseen_key}"}).status_code == 200
    finally:
        server.stop()
