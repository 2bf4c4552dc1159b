"""A database that stops answering (issue 20, finding 3; contract sections 2 and 3): PostgreSQL frozen
with SIGSTOP — its kernel still accepts connections and acknowledges bytes, so nothing ever errors on
its own. Requests that need it answer 503 ``database_unavailable`` with ``Retry-After`` within 5 s
(never a 408 for a body that arrived), ``/readyz`` answers 503 within 2 s, and everything recovers
without a restart when it thaws.

The test freezes this run's own embedded server (every process of the cluster) and always thaws it
in ``finally``; nothing else uses that cluster while it is frozen."""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.edge.conftest import WebServer, running_edge, server_env

pytestmark = pytest.mark.slow


def cluster_pids(socket_dir: str) -> list[int]:
    """The postmaster (from postmaster.pid in its data directory, which is also its socket
    directory here) and its children."""
    postmaster = int((Path(socket_dir) / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(entry.name))
    return [postmaster, *children]


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


@pytest.fixture
def edge_url(transactional_db: None, tmp_path: Path) -> Iterator[str]:
    """The deployment's path: the edge proxy in front of gunicorn, on this run's database."""
    from django.db import connection

    server = WebServer(env=server_env(database={"EMBEDDED_DATABASE_NAME": connection.settings_dict["NAME"]},
                                      tmp=tmp_path), log_path=tmp_path / "web.log", threads=4)
    server.start()
    try:
        with running_edge(server, tmp_path) as edge:
            yield edge.url
    finally:
        server.stop()


def test_a_frozen_database_is_503_within_seconds_and_recovers_when_it_thaws(edge_url, edge_key, make_api_key):
    from django.db import connection

    socket_dir = connection.settings_dict["HOST"]
    assert socket_dir.startswith("/"), "the embedded server's socket directory"
    _, unseen_key = make_api_key()  # its verification needs the database
    known = {"Authorization": f"Api-Key {edge_key}"}
    unseen = {"Authorization": f"Api-Key {unseen_key}"}
    connection.close()  # this process holds no session into the frozen server
    client = httpx.Client(base_url=edge_url, timeout=30)
    pids: list[int] = []
    try:
        assert client.post("/api/v1/lookup", json={"internal_token": edge_key.token}, headers=known).status_code == 200
        assert client.get("/readyz").json()["checks"]["database"] == "ok"

        pids = cluster_pids(socket_dir)
        signal_all(pids, signal.SIGSTOP)
        answers, probes = [], []
        for _round in range(3):  # the first round cuts the open sessions; later ones must connect afresh
            answers.append(timed(lambda: client.post("/api/v1/reservations", content=b"{}", headers={
                **unseen, "Content-Type": "application/json"})))
            answers.append(timed(lambda: client.post("/api/v1/lookup", json={"internal_token": edge_key.token},
                                                     headers=known)))
            answers.append(timed(lambda: client.get("/api/v1/pools/edge", headers=unseen)))
            ready, took = timed(lambda: client.get("/readyz"))
            assert ready.status_code == 503 and ready.json()["checks"]["database"] == "down", ready.text
            assert took < 2.0, took
            probes.append(took)
        print(f"\nfrozen PostgreSQL: API answers {', '.join(f'{t:.2f}' for _, t in answers)} s; "
              f"/readyz {', '.join(f'{t:.2f}' for t in probes)} s")
        for response, took in answers:
            assert response.status_code == 503, response.text  # never a 408: the body had arrived
            assert response.json()["code"] == "database_unavailable"
            assert int(response.headers["Retry-After"]) >= 1
            assert took < 5.0, took
    finally:
        signal_all(pids, signal.SIGCONT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # recovery without a restart
        response = client.post("/api/v1/lookup", json={"internal_token": edge_key.token}, headers=known)
        if response.status_code == 200:
            break
        time.sleep(0.5)
    assert response.status_code == 200, response.text
    print(f"thawed: first 200 {time.monotonic() - deadline + 30:.2f} s after SIGCONT")
    assert client.post("/api/v1/reservations", json={"pool": "edge"}, headers=unseen).status_code == 201
    assert client.get("/readyz").json()["checks"]["database"] == "ok"
