"""The process supervision of `make run` (devtools/runner.py): children in sessions of their own,
signals that only record, restarts with backoff and an idempotent, bounded stop.

- Signal handlers only record the signal; the main loop does every stop. `make` forwards the SIGTERM
  it gets to its recipe, which already got one from the process group, so the runner sees two; a
  handler that acted (it used to raise) could abort a stop half-way and orphan the stack.
- Every child runs in its own session (a signal to the terminal's or make's process group reaches
  only the runner) with PR_SET_PDEATHSIG, so even a runner killed by SIGKILL takes them down.
- Stopping is idempotent: SIGTERM to each child's main process (the proxy and web first), wait up to
  ``stop_timeout`` seconds (settings.RUNNER_STOP_TIMEOUT), then SIGKILL what is left of each child's
  process group; the embedded PostgreSQL (when this run started it) last.
No Django here: the runner's settings are handed in.
"""
from __future__ import annotations

import ctypes
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from devtools import embedded_db

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
BACKOFF_MAX_SECONDS = 60.0
STABLE_AFTER_SECONDS = 60.0  # a child that ran this long before exiting restarts without delay
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# A database start is given this much longer than the stop timeout: a first initdb on a loaded machine
# takes tens of seconds, and killing it half-way leaves a postmaster starting with no one left to stop it.
LET_FINISH_EXTRA_SECONDS = 120.0


def log(message: str) -> None:
    print(f"[make run] {message}", flush=True)


# --- children -------------------------------------------------------------------------------------
try:
    _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not Linux/glibc: no parent-death signal, the stop path still works
    _LIBC = None
_PR_SET_PDEATHSIG = 1


def set_parent_death_signal() -> None:
    """Ask the kernel to SIGTERM this process when its parent dies (Linux; no-op elsewhere)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """One supervised process. ``policy``: ``restart`` (backoff), ``fatal`` (its exit stops the
    stack) or ``oneshot`` (a step whose exit is just reported)."""

    def __init__(self, name: str, argv: list[str], *, policy: str) -> None:
        self.name, self.argv, self.policy = name, argv, policy
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.failures = 0  # consecutive quick exits, for the backoff
        self.let_finish = False  # on stop: not signalled, waited for (stop timeout + 120 s), then killed
        self.restart_at: float | None = None

    def start(self, env: Mapping[str, str]) -> None:
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=dict(env), start_new_session=True,
                                     preexec_fn=set_parent_death_signal)  # noqa: PLW1509 - single-threaded
        self.started_at = time.monotonic()
        self.restart_at = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive:
            try:
                self.proc.send_signal(signum)  # type: ignore[union-attr]
            except ProcessLookupError:
                pass

    def kill_group(self) -> None:
        """SIGKILL the child's whole process group (its pid: it leads its own session)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Stopping(Exception):
    """Raised by the main flow (never by a signal handler) once a stop was requested."""


class Supervisor:
    """Children started, watched and stopped; ``env`` is the environment every child gets."""

    def __init__(self, env: dict[str, str], *, stop_timeout: float = 15.0) -> None:
        self.env = env
        self.stop_timeout = stop_timeout
        self.children: list[Child] = []
        self.stop_signal: int | None = None
        self.parent = os.getppid()
        self.owns_database = False  # stop the embedded PostgreSQL last (this run started it)
        self._shut_down = False

    # --- signals: record only -----------------------------------------------------------------
    def on_signal(self, signum: int, _frame: object) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum

    def check(self) -> None:
        if self.stop_signal is not None:
            raise Stopping(signal.Signals(self.stop_signal).name)
        if os.getppid() != self.parent:
            raise Stopping("parent process went away")

    def pause(self, seconds: float) -> None:
        """Sleep in short steps so a stop request is acted on within ~0.1 s."""
        deadline = time.monotonic() + seconds
        while True:
            self.check()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.1, left))

    # --- children -----------------------------------------------------------------------------
    def spawn(self, name: str, argv: list[str], *, policy: str) -> Child:
        self.check()
        log(f"starting {name}: {' '.join(argv)}")
        child = Child(name, argv, policy=policy)
        self.children.append(child)  # before it exists: a stop from now on includes it
        child.start(self.env)
        return child

    def wait_child(self, child: Child, *, timeout: float) -> int | None:
        """The child's exit status, or None if it still runs after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while child.alive and time.monotonic() < deadline:
            self.pause(0.1)
        return child.proc.poll() if child.proc else None

    def step(self, name: str, argv: list[str], *, ok: tuple[int, ...] = (0,), let_finish: bool = False) -> int:
        child = self.spawn(name, argv, policy="oneshot")
        child.let_finish = let_finish
        status = self.wait_child(child, timeout=float("inf"))
        self.children.remove(child)
        if status not in ok:
            raise RuntimeError(f"{name} failed with exit status {status}")
        return status  # type: ignore[return-value]

    def wait_http(self, url: str, *, timeout: float, child: Child | None = None, verify: Path | None = None) -> bool:
        """Poll ``url`` until it answers below 500; ``verify``: the CA bundle of an HTTPS ``url`` (the
        proxy writes its local CA's root certificate once it is up, so a missing file means "not yet")."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            if child is not None and not child.alive:
                return False
            try:
                if verify is None or verify.is_file():
                    context = ssl.create_default_context(cafile=str(verify)) if verify else True
                    if httpx.get(url, timeout=1.0, verify=context).status_code < 500:
                        return True
            except httpx.HTTPError:
                pass
            self.pause(0.2)
        return False

    def supervise_once(self) -> None:
        """Restart exited qcluster/emulator with backoff; a web server exit ends the run."""
        now = time.monotonic()
        for child in list(self.children):
            if child.proc is None or child.alive:
                continue
            if child.restart_at is not None:
                if now >= child.restart_at:
                    log(f"restarting {child.name} (restart #{child.failures})")
                    child.start(self.env)
                continue
            status = child.proc.returncode  # type: ignore[union-attr]
            if child.policy == "oneshot":
                log(f"{child.name} finished with exit status {status}")
                self.children.remove(child)
            elif child.policy == "fatal":
                raise RuntimeError(f"{child.name} exited with status {status}; stopping the stack")
            else:
                ran = now - child.started_at
                child.failures = 1 if ran >= STABLE_AFTER_SECONDS else child.failures + 1
                delay = min(BACKOFF_MAX_SECONDS, 2.0 ** (child.failures - 1))
                child.restart_at = now + delay
                log(f"{child.name} exited with status {status} after {ran:.1f} s; "
                    f"restart #{child.failures} in {delay:g} s")

    # --- stop: idempotent, not interruptible ----------------------------------------------------
    def shutdown(self) -> None:
        if self._shut_down:
            return
        self._shut_down = True
        started = time.monotonic()
        running = [c for c in reversed(self.children) if c.alive]
        if running:
            log("stopping " + ", ".join(c.name for c in running))
        for child in running:
            # The main process only: gunicorn's master and qcluster's guard stop their own workers in
            # order (qcluster hangs when its whole group is signalled at once).
            if not child.let_finish:
                child.signal(signal.SIGTERM)
        self._wait_stopped(running)
        self._kill_left()
        if self.owns_database:
            embedded_db.stop_server()
            log("embedded PostgreSQL stopped")
        log(f"all processes stopped ({time.monotonic() - started:.1f} s)")

    def _wait_stopped(self, running: list[Child]) -> None:
        deadline = time.monotonic() + self.stop_timeout
        finish_by = deadline + LET_FINISH_EXTRA_SECONDS
        while any(c.alive and time.monotonic() < (finish_by if c.let_finish else deadline) for c in running):
            time.sleep(0.05)

    def _kill_left(self) -> None:
        for child in reversed(self.children):
            if child.alive:
                log(f"{child.name} did not stop in time; killing its process group")
            # Also sweeps workers a dead main process may have left in its group.
            child.kill_group()
        for child in self.children:
            if child.proc is not None:
                try:
                    child.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    log(f"{child.name} (pid {child.proc.pid}) survived SIGKILL")
