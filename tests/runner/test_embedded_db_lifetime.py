"""Issue 21.5: whatever starts the embedded PostgreSQL stops it. A pytest session (`make test`) and a
standalone `manage.py tome_emulator` that started it stop it when they end; one that found it running
(a `make run`, another test run) leaves it alone. Each test uses a cluster of its own (EMBEDDED_PGDATA)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools import embedded_db
from tests.fixtures.processes import ROOT, free_port, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def own_cluster() -> Iterator[Path]:
    """A directory for a cluster nobody else uses (short path: the unix socket lives in it)."""
    home = Path(tempfile.mkdtemp(prefix="tp-db-", dir="/tmp"))
    try:
        yield home
    finally:
        embedded_db.stop_server(home / "pgdata")
        shutil.rmtree(home, ignore_errors=True)


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ, EMBEDDED_PGDATA=str(home / "pgdata"), TOKENPOOL_VAR_DIR=str(home / "var"),
               PYTHONUNBUFFERED="1")
    for name in ("DATABASE_URL", "TEST_DATABASE_NAME", "PROMETHEUS_MULTIPROC_DIR", "TOME_EMULATOR_DATABASE_URL"):
        env.pop(name, None)
    return env


def test_a_pytest_session_stops_the_server_it_started_and_leaves_one_it_found(own_cluster: Path):
    pgdata = own_cluster / "pgdata"
    run = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_readme_settings.py"]
    done = subprocess.run(run, cwd=ROOT, env=_env(own_cluster), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (pgdata / "PG_VERSION").exists()  # it did start one there
    assert not embedded_db.is_running(pgdata), "the test session left its PostgreSQL running"

    embedded_db.ensure_database("tokenpool", pgdata=pgdata)  # someone else's server (a make run)
    done = subprocess.run(run, cwd=ROOT, env=_env(own_cluster), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert embedded_db.is_running(pgdata), "the test session stopped a server it did not start"


def test_a_standalone_tome_emulator_stops_the_server_it_started(own_cluster: Path):
    pgdata = own_cluster / "pgdata"
    port = free_port()
    emulator = subprocess.Popen([sys.executable, "manage.py", "tome_emulator", "--port", str(port)], cwd=ROOT,
                                env=_env(own_cluster), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def healthy() -> bool:
            assert emulator.poll() is None, emulator.stderr.read().decode()[-2000:] if emulator.stderr else ""
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, timeout=120, interval=0.5, message="the emulator")
        assert embedded_db.is_running(pgdata)
        emulator.send_signal(signal.SIGINT)  # Ctrl-C
        assert emulator.wait(timeout=60) == 0
    finally:
        if emulator.poll() is None:
            emulator.kill()
    assert wait_for(lambda: not embedded_db.is_running(pgdata), timeout=30, message="PostgreSQL to stop")


def test_a_command_that_started_the_server_says_how_to_stop_it(own_cluster: Path):
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", "pass"], cwd=ROOT, env=_env(own_cluster),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert embedded_db.is_running(own_cluster / "pgdata")  # kept for the next command
    assert embedded_db.STOP_COMMAND in done.stderr
    stop = subprocess.run([sys.executable, "-m", "devtools.embedded_db", "stop"], cwd=ROOT,
                          env=_env(own_cluster), capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0 and "stopped" in stop.stdout
    assert not embedded_db.is_running(own_cluster / "pgdata")


def test_a_stop_finds_a_postmaster_whose_pid_file_is_missing(own_cluster: Path):
    """A stop that comes while a start is under way (pg_ctl gave up on a slow start, or the postmaster
    has not written postmaster.pid yet) must still stop it: it is found by its ``-D`` argument."""
    pgdata = own_cluster / "pgdata"
    embedded_db.ensure_database("tokenpool", pgdata=pgdata)
    [postmaster] = embedded_db.postmasters(pgdata)
    (pgdata / "postmaster.pid").rename(own_cluster / "postmaster.pid.aside")  # as if not written yet
    assert embedded_db.is_running(pgdata)
    embedded_db.stop_server(pgdata)
    assert not embedded_db.is_running(pgdata)
    assert not Path(f"/proc/{postmaster}").exists() or embedded_db.postmasters(pgdata) == set()


def test_a_stale_pid_file_naming_another_process_is_not_a_running_server(own_cluster: Path):
    """A postmaster killed by SIGKILL leaves its postmaster.pid; in a container whose init reaps no
    orphans it stays a zombie, and its pid can later name an unrelated process. Neither is a server:
    `make run` would otherwise think someone else started the cluster and leave it running on exit."""
    pgdata = own_cluster / "pgdata"
    _start_in_a_new_process(own_cluster)  # a cluster, initialised and stopped again
    embedded_db.stop_server(pgdata)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (pgdata / "postmaster.pid").write_text(f"{other.pid}\n{pgdata}\n")
        assert not embedded_db.is_running(pgdata)
        embedded_db.stop_server(pgdata)  # signals no one
        assert other.poll() is None, "stop_server signalled a process that is not this cluster's postmaster"
    finally:
        other.kill()
        other.wait()
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_for(lambda: Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
             timeout=30, message="the child to exit")  # exited, not yet reaped: a zombie
    try:
        (pgdata / "postmaster.pid").write_text(f"{zombie.pid}\n{pgdata}\n")
        assert not embedded_db.is_running(pgdata)
        # PostgreSQL itself refuses a lock file whose pid the kernel still knows: the start removes it.
        _start_in_a_new_process(own_cluster)
        assert embedded_db.is_running(pgdata)
        assert zombie.pid not in embedded_db.postmasters(pgdata)
    finally:
        zombie.wait()
    embedded_db.stop_server(pgdata)
    (pgdata / "postmaster.pid").write_text(f"{zombie.pid}\n{pgdata}\n")  # reaped now: no such process
    assert not embedded_db.is_running(pgdata)
    assert embedded_db.postmasters(pgdata) == set()


def _start_in_a_new_process(home: Path) -> None:
    """What every `manage.py` command does when it loads the settings (a process starts a server once)."""
    start = "from devtools import embedded_db; embedded_db.ensure_database('tokenpool')"
    done = subprocess.run([sys.executable, "-c", start], cwd=ROOT, env=_env(home), capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
