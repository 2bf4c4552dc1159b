"""`make run`: the whole stack on embedded defaults, in the foreground, supervised.

Start order: embedded PostgreSQL (a child a stop lets finish: initdb must not be cut half-way) →
TOME emulator, booting beside the bootstrap (migrate, static files, admin user, onboarding demo data,
the development API key; one child process) → initial fill of pool `default` when it is below its
target (best effort, bounded wait: TOME may be down) → qcluster + web server.

Supervision (docs/operations.md, "Process runner"):
- Signal handlers only record the signal; the main loop does every stop. `make` forwards the SIGTERM
  it gets to its recipe, which already got one from the process group, so the runner sees two; a
  handler that acted (it used to raise) could abort a stop half-way and orphan the stack.
- Every child runs in its own session (a signal to the terminal's or make's process group reaches
  only the runner) with PR_SET_PDEATHSIG, so even a runner killed by SIGKILL takes them down.
- Stopping is idempotent: SIGTERM to each child's main process (web first), wait up to
  RUNNER_STOP_TIMEOUT seconds, then SIGKILL what is left of each child's process group; the
  embedded PostgreSQL (when this run started it) last.
- The qcluster and the emulator are restarted with exponential backoff when they exit. The web
  server exiting stops the stack with status 1: the API is what the stack is for, and a supervisor
  above (systemd, a container runtime) restarts the whole stack rather than a crash-looping server
  hiding behind a runner that looks alive.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
DEV_KEY_NAME = "dev-make-run"
DEV_KEY_SCOPES = "reserve,lookup,detokenize,pools:read"
LEGACY_DEV_KEY = r"^dev-[0-9]+$"  # `dev-<unix time>`: one per `make run` before keys were kept in var/
BACKOFF_MAX_SECONDS = 60.0
STABLE_AFTER_SECONDS = 60.0  # a child that ran this long before exiting restarts without delay
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# The bootstrap's exit status when pool `default` is below its target (0: at target, no fill needed;
# saves starting one more Django process on every ordinary restart).
BOOTSTRAP_NEEDS_FILL = 3


def log(message: str) -> None:
    print(f"[make run] {message}", flush=True)


def var_dir() -> Path:
    """Where this checkout keeps its run state (admin password, dev key, metrics files).
    ``TOKENPOOL_VAR_DIR`` lets tests run a whole stack without touching the checkout's own."""
    return Path(os.environ.get("TOKENPOOL_VAR_DIR") or ROOT / "var").resolve()


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def web_command(*, port: int, env: Mapping[str, str]) -> list[str]:
    """The web server's argv: the one place that says which server runs the API."""
    # gunicorn gthread plus our worker's edge guarantees (10 s read deadline per request, honoured
    # Connection: close, JSON error pages): api/gunicorn_worker.py; why not granian:
    # docs/benchmarks.md "Web server". The Dockerfile runs the same command.
    return [PY, "-m", "gunicorn", "tokenpool.wsgi", "--bind", f"127.0.0.1:{port}",
            "--worker-class", "api.gunicorn_worker.TokenPoolThreadWorker",
            "--workers", env.get("WEB_WORKERS", "2"),
            "--threads", env.get("WEB_THREADS", "4"), "--graceful-timeout", "10",
            # The control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl), shared by
            # every gunicorn on the machine; nothing here uses it.
            "--no-control-socket"]


# --- children -------------------------------------------------------------------------------------
try:
    _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not Linux/glibc: no parent-death signal, the stop path still works
    _LIBC = None
_PR_SET_PDEATHSIG = 1


def _set_parent_death_signal() -> None:
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
                                     preexec_fn=_set_parent_death_signal)  # noqa: PLW1509 - single-threaded
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


class Runner:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.children: list[Child] = []
        self.stop_signal: int | None = None
        self.parent = os.getppid()
        self.owns_database = False
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

    def wait_http(self, url: str, *, timeout: float, child: Child | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            if child is not None and not child.alive:
                return False
            try:
                if httpx.get(url, timeout=1.0).status_code < 500:
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
        deadline = time.monotonic() + _env_float("RUNNER_STOP_TIMEOUT", 15.0)
        # A database start is given longer: a first initdb on a loaded machine takes tens of seconds,
        # and killing it half-way leaves a postmaster starting with no one left to stop it.
        finish_by = deadline + 120.0
        while any(c.alive and time.monotonic() < (finish_by if c.let_finish else deadline) for c in running):
            time.sleep(0.05)
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
        if self.owns_database:
            from devtools import embedded_db

            embedded_db.stop_server()
            log("embedded PostgreSQL stopped")
        log(f"all processes stopped ({time.monotonic() - started:.1f} s)")

    # --- the run ------------------------------------------------------------------------------
    def run(self) -> int:
        env = self.env
        var = var_dir()
        port = int(env.get("PORT", "8000"))
        metrics_dir = var / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)  # multiprocess metrics start fresh with the stack
        metrics_dir.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)

        if not env.get("DATABASE_URL"):
            from devtools import embedded_db

            # Stop the embedded server on exit only if this run started it (a test run may share it).
            self.owns_database = not embedded_db.is_running()
            log("embedded PostgreSQL")
            # In a child of its own session, let finish even when a stop comes: initdb or pg_ctl killed
            # half-way by a signal to the terminal's process group would leave a broken var/pgdata.
            name = env.get("EMBEDDED_DATABASE_NAME", "tokenpool")
            self.step("database",
                      [PY, "-c", f"from devtools import embedded_db; embedded_db.ensure_database({name!r})"],
                      let_finish=True)

        emulator = None
        if not env.get("TOME_BASE_URL"):
            # Started first: it needs only the database server, and boots while the bootstrap runs.
            tome_port = env.get("TOME_PORT", "8900")
            env["TOME_BASE_URL"] = f"http://127.0.0.1:{tome_port}"
            emulator = self.spawn("tome-emulator", [PY, "manage.py", "tome_emulator", "--port", tome_port],
                                  policy="restart")
        needs_fill = self.step("bootstrap", [PY, "-m", "devtools.runner", "bootstrap"],
                               ok=(0, BOOTSTRAP_NEEDS_FILL)) == BOOTSTRAP_NEEDS_FILL
        if emulator is not None and not self.wait_http(f"{env['TOME_BASE_URL']}/healthz", timeout=60,
                                                       child=emulator):
            log("TOME emulator is not answering yet; continuing (the API serves what the database holds)")
        log(f"TOME at {env['TOME_BASE_URL']}")

        if needs_fill:
            self.initial_fill()
        else:
            log("pool 'default' is at its target")

        self.spawn("qcluster", [PY, "manage.py", "qcluster"], policy="restart")
        web = self.spawn("web", web_command(port=port, env=env), policy="fatal")
        base = f"http://127.0.0.1:{port}"
        if not self.wait_http(f"{base}/healthz", timeout=120, child=web):
            raise RuntimeError(f"the web server did not come up on {base}")
        self._banner(base, var)
        while True:
            self.pause(0.25)
            self.supervise_once()

    def initial_fill(self) -> None:
        """Best effort: with TOME down the stack must still come up and serve the pairs it has."""
        fill_wait = _env_float("RUNNER_FILL_WAIT_SECONDS", 60.0)
        log(f"filling pool 'default' to its target (startup refill, waiting at most {fill_wait:g} s)")
        fill = self.spawn("initial-fill", [PY, "manage.py", "refill_pool", "--pool", "default",
                                           "--trigger", "startup"], policy="oneshot")
        status = self.wait_child(fill, timeout=fill_wait)
        if status is None:
            log(f"initial fill still running after {fill_wait:g} s; starting the API, the fill continues")
            return
        self.children.remove(fill)
        if status != 0:
            log(f"initial fill ended with status {status} (TOME unreachable?); serving what the "
                "database holds, /readyz says degraded; the qcluster retries on its schedule")

    def _banner(self, base: str, var: Path) -> None:
        try:
            readiness = httpx.get(f"{base}/readyz", timeout=10.0).json()
            ready = f"{readiness['status']} {readiness['checks']}"
        except (httpx.HTTPError, ValueError, KeyError):
            ready = "unknown"
        password, key = _shown(var / "admin-password.txt"), _shown(var / "dev-api-key.txt")
        # Paths only: secrets on a console end up in scrollback, screen shares and CI logs.
        print(
            "\n"
            f"  TokenPool is up at {base}   (readiness: {ready})\n"
            f"  Admin:     {base}/admin/   user: admin, password in {password}\n"
            f"  Dashboard: {base}/admin/dashboard/\n"
            f"  API docs:  {base}/api/docs/      Metrics: {base}/metrics\n"
            f"  Dev API key (all scopes, kept across runs) in {key}\n"
            f"  Try: curl -s -XPOST -H \"Authorization: Api-Key $(cat {key})\" "
            f"-H 'Content-Type: application/json' -d '{{}}' {base}/api/v1/reservations\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --- bootstrap (child process: one Django start for every setup step) ---------------------------
def bootstrap() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokenpool.settings")
    import django

    django.setup()
    from django.core.management import call_command

    var = var_dir()
    var.mkdir(parents=True, exist_ok=True)
    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)  # served by whitenoise
    call_command("ensure_admin", "--username", "admin", "--password-file", str(var / "admin-password.txt"))
    # Development demo data: UAT onboarding approved (by two demo users, four-eyes) so the readiness
    # gate lets the UAT pool refill.
    call_command("load_onboarding_plan", "--approve-environment", "UAT")
    revoked = revoke_legacy_dev_keys()
    if revoked:
        print(f"Revoked {revoked} development key(s) left by earlier `make run`s.", flush=True)
    call_command("create_api_key", DEV_KEY_NAME, "--scopes", DEV_KEY_SCOPES,
                 "--key-file", str(var / "dev-api-key.txt"))
    from pool.models import Pool
    from pool.selectors import pool_available_up_to

    pool = Pool.objects.filter(name="default").first()
    if pool is not None and pool_available_up_to(pool=pool, limit=pool.target_size) >= pool.target_size:
        return 0
    return BOOTSTRAP_NEEDS_FILL


def revoke_legacy_dev_keys() -> int:
    """Revoke the all-scope `dev-<unix time>` keys every earlier `make run` created and kept active."""
    from keys.services import api_keys_revoke

    return api_keys_revoke(name_regex=LEGACY_DEV_KEY)


def main(argv: list[str]) -> int:
    if argv[:1] == ["bootstrap"]:
        return bootstrap()
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tokenpool.settings", PYTHONUNBUFFERED="1")
    env.setdefault("TOKENPOOL_VAR_DIR", str(var_dir()))
    runner = Runner(env)
    for signum in HANDLED_SIGNALS:
        signal.signal(signum, runner.on_signal)
    # SIGTERM to `make` alone must stop the stack too (make forwards it, but not SIGKILL).
    _set_parent_death_signal()
    try:
        return runner.run()
    except Stopping as reason:
        log(f"stopping ({reason})")
        return 0 if runner.stop_signal is not None else 1
    except Exception as exc:  # noqa: BLE001 - a failed step or a dead web server: report, then stop everything
        log(f"{exc}")
        return 1
    finally:
        runner.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
