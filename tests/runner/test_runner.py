"""`make run` as real processes: signal races, a dying qcluster, TOME unreachable, secrets.

Regression tests of issue 10 item 1 (a second SIGTERM used to abort the stop and orphan the stack;
a crashed qcluster stopped the web server; TOME down refused to start) and item 9 (secrets printed,
a new all-scope key per run). Each start of a stack costs 10-40 s on a loaded 2-core machine, so
the checks share as few starts as possible.
"""
from __future__ import annotations

import os
import random
import signal
import ssl
import stat
import subprocess
import time

import httpx
import pytest

from devtools.runner import DEV_KEY_NAME
from tests.fixtures.processes import free_port, wait_for
from tests.runner.stack import Stack, cluster_running, port_open, run_sql, stack_base_env, start_cluster

pytestmark = pytest.mark.slow

# Starting the cluster (runner in-process), bootstrap (a step child; the emulator boots beside it),
# the initial fill (a one-shot child),
# the application server booting, the proxy booting in front of it (every supervised child alive).
PHASES = ["[make run] embedded PostgreSQL", "starting bootstrap", "starting initial-fill", "starting web",
          "starting edge"]


@pytest.mark.parametrize("phase", PHASES)
def test_two_quick_sigterms_at_any_phase_leave_nothing_running(make_stack, stack_home, phase):
    if phase == "starting initial-fill":  # the fill runs only when the pool is below its target
        run_sql(stack_home, "UPDATE core_pool SET target_size = target_size + 2000 WHERE name = 'default'")
    stack: Stack = make_stack().start()
    stack.wait_output(phase)
    # Land anywhere inside the phase (a random pause, asserted on nothing); the two signals arrive
    # within a few ms of each other.
    time.sleep(random.uniform(0, 0.5))
    stack.signal_group_twice(gap=random.uniform(0, 0.02))
    assert stack.wait_exit() == 0, stack.tail()
    stack.assert_nothing_left()


def test_make_run_leaves_running_a_postgresql_it_found_running(make_stack, stack_home):
    """Contract: a stop takes the embedded PostgreSQL down only when this run started it (a test
    session or a `manage.py` command beside it may be using the server it found)."""
    start_cluster(stack_base_env(stack_home))
    stack: Stack = make_stack().start()
    stack.wait_output("starting bootstrap")  # the database step is done: it found the server running
    stack.signal_group_twice()
    assert stack.wait_exit() == 0, stack.tail()
    assert cluster_running(stack_home), f"the run stopped a server it did not start\n{stack.tail()}"
    assert "embedded PostgreSQL stopped" not in stack.output()


def test_make_run_with_tome_unreachable_survives_a_qcluster_kill_and_stops_on_two_sigterms(make_stack, stack_home):
    """After the runs above: the development key they created is reused, not replaced."""
    key_file = stack_home / "var" / "dev-api-key.txt"
    before = key_file.read_text().strip() if key_file.exists() else None
    tome_url = f"http://127.0.0.1:{free_port()}"  # nobody there
    stack: Stack = make_stack(via_make=True, tome_base_url=tome_url,
                              RUNNER_FILL_WAIT_SECONDS="10", REFILL_BACKOFF_MAX_SECONDS="0.5").start()
    stack.wait_up()

    # TOME_BASE_URL names another TOME: the runner uses it and starts no emulator, neither on
    # TOME_PORT (which the stack sets) nor anywhere else.
    assert f"TOME at {tome_url}" in stack.output()
    assert not stack.children("tome_emulator")
    assert not port_open(stack.tome_port), "the runner started its emulator although TOME_BASE_URL was set"

    # Up although TOME is unreachable: alive, not ready, degraded rather than down.
    assert stack.get("/healthz").status_code == 200
    ready = stack.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["database"] == "ok" and ready.json()["checks"]["tome"] == "down"
    key = stack.api_key()
    if before is not None:  # after the phase runs (the usual order): one key per checkout, kept while valid
        assert key == before and "kept in" in stack.output()
    else:  # run on its own: this run made the first one
        assert f"Created API key {DEV_KEY_NAME!r}" in stack.output()
    reserve = httpx.post(f"{stack.base_url}/api/v1/reservations", json={}, timeout=30,
                         headers={"Authorization": f"Api-Key {key}"})
    # Served from the database when it holds pairs, else the contract's 503 (pool empty, TOME down).
    assert reserve.status_code == 201 or reserve.json()["code"] == "pool_unavailable", reserve.text

    # A dead qcluster is restarted; the API never stops answering.
    [qcluster] = wait_for(lambda: stack.children("qcluster") or None, timeout=30, message="the qcluster")
    os.killpg(qcluster, signal.SIGKILL)
    for _ in range(5):
        assert stack.get("/healthz").status_code == 200
    wait_for(lambda: [p for p in stack.children("qcluster") if p != qcluster] or None,
             timeout=60, message="a new qcluster")
    assert "qcluster exited with status -9" in stack.output()
    assert stack.get("/healthz").status_code == 200

    # make gets one SIGTERM from the group and forwards another to the runner: one clean stop.
    stack.signal_group_twice(gap=0.001)
    stack.wait_exit()
    stack.assert_nothing_left()

    # Secrets never reach the console or the JSON logs; their files do, private to the owner.
    password_file = stack_home / "var" / "admin-password.txt"
    output = stack.output()
    for secret in (key, key.split(".")[1], password_file.read_text().strip()):
        assert secret not in output
    for path in (password_file, key_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert str(path) in output  # shown by path


def test_tls_make_run_serves_https_and_http2_with_its_local_ca_and_the_app_server_only_on_loopback(make_stack,
                                                                                                   stack_home):
    """`TLS=1 make run`: the README's curl example (``--cacert var/caddy/…/root.crt``) works; plain HTTP
    on that port does not; the application server listens on 127.0.0.1 only, on another port."""
    stack: Stack = make_stack(TLS="1").start()
    stack.wait_up()
    base = f"https://127.0.0.1:{stack.port}"
    ca = stack_home / "var" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
    assert f"TokenPool is up at {base}" in stack.output() and "--cacert" in stack.output()
    key = stack.api_key()
    with httpx.Client(base_url=base, verify=ssl.create_default_context(cafile=str(ca)), http2=True, timeout=30,
                      headers={"Authorization": f"Api-Key {key}"}) as client:
        health = client.get("/healthz")
        assert health.status_code == 200 and health.http_version == "HTTP/2"
        assert client.post("/api/v1/reservations", json={}).status_code in (201, 503)
    with pytest.raises(httpx.ConnectError):  # not trusted without the local CA
        httpx.get(f"{base}/healthz", timeout=10)
    curl = subprocess.run(["curl", "-s", "--cacert", str(ca), f"https://localhost:{stack.port}/healthz"],
                          capture_output=True, text=True, timeout=30)
    assert curl.returncode == 0 and '"ok"' in curl.stdout
    assert httpx.get(f"http://127.0.0.1:{stack.port}/healthz", timeout=10).status_code == 400
    [web] = stack.children("gunicorn")
    listening = _listening_ports(web)
    assert listening and stack.port not in listening
    assert all(address == "127.0.0.1" for address, _ in _listening_addresses(web))
    stack.signal_group_twice(gap=0.001)
    assert stack.wait_exit() == 0
    stack.assert_nothing_left()


def _listening_addresses(pid: int) -> list[tuple[str, int]]:
    """(address, port) of the IPv4 sockets ``pid`` listens on (/proc/net/tcp state 0A)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                hex_address, hex_port = fields[1].split(":")
                address = ".".join(str(int(hex_address[i:i + 2], 16)) for i in (6, 4, 2, 0))
                found.append((address, int(hex_port, 16)))
    return found


def _listening_ports(pid: int) -> list[int]:
    return [port for _, port in _listening_addresses(pid)]
