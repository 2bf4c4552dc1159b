"""`make run`: the whole stack on embedded defaults, in the foreground, supervised.

Start order: embedded PostgreSQL and the settings (a child a stop lets finish: initdb must not be cut half-way) →
TOME emulator, booting beside the bootstrap (migrate, static files, admin user, onboarding demo data,
the development API key; one child process) → initial fill of pool `default` when it is below its
target (best effort, bounded wait: TOME may be down) → qcluster + web server.

Configuration: ``django.conf.settings`` ("Web server and process runner" in tokenpool/settings/base.py),
loaded by the runner once the database step is done (loading the development settings starts the
embedded PostgreSQL, which must happen in a child of its own session, see below).

Supervision (docs/operations.md, "Process runner"; devtools/supervision.py):
- Signals only recorded; children in sessions of their own with a parent-death signal; an
  idempotent stop bounded by RUNNER_STOP_TIMEOUT (devtools/supervision.py says how and why).
- The qcluster and the emulator are restarted with exponential backoff when they exit. The web
  server exiting stops the stack with status 1: the API is what the stack is for, and a supervisor
  above (systemd, a container runtime) restarts the whole stack rather than a crash-looping server
  hiding behind a runner that looks alive.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx
from django.conf import settings

from devtools import embedded_db
from devtools.supervision import HANDLED_SIGNALS, PY, Stopping, Supervisor, log, set_parent_death_signal

DEV_KEY_NAME = "dev-make-run"
DEV_KEY_SCOPES = "reserve,lookup,detokenize,pools:read"
# The bootstrap's exit status when pool `default` is below its target (0: at target, no fill needed;
# saves starting one more Django process on every ordinary restart).
BOOTSTRAP_NEEDS_FILL = 3


def web_command(*, port: int, workers: int | None = None, threads: int | None = None,
                env: Mapping[str, str] | None = None) -> list[str]:
    """The web server's argv: the one place that says which server runs the API.

    ``workers``/``threads`` default to settings.WEB_WORKERS/WEB_THREADS. ``env`` (deprecated: pass
    ``workers``/``threads``) is the child's environment its callers used to put WEB_WORKERS/WEB_THREADS
    in (bench/http.py); those values still win over the settings when given there."""
    env = env or {}
    workers = workers if workers is not None else int(env.get("WEB_WORKERS") or settings.WEB_WORKERS)
    threads = threads if threads is not None else int(env.get("WEB_THREADS") or settings.WEB_THREADS)
    # gunicorn gthread plus our worker's edge guarantees (10 s read deadline per request, honoured
    # Connection: close, JSON error pages): api/gunicorn_worker.py; why not granian:
    # docs/benchmarks.md "Web server". The Dockerfile runs the same command.
    return [PY, "-m", "gunicorn", "tokenpool.wsgi", "--bind", f"127.0.0.1:{port}",
            "--worker-class", "api.gunicorn_worker.TokenPoolThreadWorker",
            "--workers", str(workers), "--threads", str(threads), "--graceful-timeout", "10",
            # The control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl), shared by
            # every gunicorn on the machine; nothing here uses it.
            "--no-control-socket"]


class Runner(Supervisor):
    def start_database(self) -> None:
        """Embedded PostgreSQL (unless DATABASE_URL is set), then this process's settings."""
        # Stop the embedded server on exit only if this run started it (a test run may share it).
        # Until the settings say whether DATABASE_URL is set: a stop during the step stops the server
        # this step may be starting (stop_server is a no-op when none runs).
        was_running = embedded_db.is_running()
        self.owns_database = not was_running
        log("embedded PostgreSQL (unless DATABASE_URL is set) and settings")
        # In a child of its own session, let finish even when a stop comes: initdb or pg_ctl killed
        # half-way by a signal to the terminal's process group would leave a broken var/pgdata.
        self.step("database", [PY, "-m", "devtools.runner", "database"], let_finish=True)
        # The server is up now: loading the settings here only connects to it (~20 ms).
        self.owns_database = not settings.DATABASE_URL and not was_running
        self.stop_timeout = settings.RUNNER_STOP_TIMEOUT

    def run(self) -> int:
        env = self.env
        self.start_database()
        var = settings.VAR_DIR
        env["TOKENPOOL_VAR_DIR"] = str(var)
        metrics_dir = var / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)  # multiprocess metrics start fresh with the stack
        metrics_dir.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)

        emulator = None
        env["TOME_BASE_URL"] = settings.TOME_BASE_URL
        if settings.RUNNER_START_TOME_EMULATOR:
            # Started first: it needs only the database server, and boots while the bootstrap runs.
            emulator = self.spawn("tome-emulator",
                                  [PY, "manage.py", "tome_emulator", "--port", str(settings.TOME_PORT)],
                                  policy="restart")
        needs_fill = self.step("bootstrap", [PY, "manage.py", "make_run_bootstrap"],
                               ok=(0, BOOTSTRAP_NEEDS_FILL)) == BOOTSTRAP_NEEDS_FILL
        if emulator is not None and not self.wait_http(f"{settings.TOME_BASE_URL}/healthz", timeout=60,
                                                       child=emulator):
            log("TOME emulator is not answering yet; continuing (the API serves what the database holds)")
        log(f"TOME at {settings.TOME_BASE_URL}")

        if needs_fill:
            self.initial_fill()
        else:
            log("pool 'default' is at its target")

        port = settings.WEB_PORT
        self.spawn("qcluster", [PY, "manage.py", "qcluster"], policy="restart")
        web = self.spawn("web", web_command(port=port), policy="fatal")
        base = f"http://127.0.0.1:{port}"
        if not self.wait_http(f"{base}/healthz", timeout=120, child=web):
            raise RuntimeError(f"the web server did not come up on {base}")
        self._banner(base, var)
        while True:
            self.pause(0.25)
            self.supervise_once()

    def initial_fill(self) -> None:
        """Best effort: with TOME down the stack must still come up and serve the pairs it has."""
        fill_wait = settings.RUNNER_FILL_WAIT_SECONDS
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


def main(argv: list[str]) -> int:
    if argv[:1] == ["database"]:
        # The database step's child: loading the settings starts the embedded server if needed.
        return 0 if settings.DATABASES else 1
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokenpool.settings")
    # The children's environment (written, not read for configuration: the settings are).
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tokenpool.settings", PYTHONUNBUFFERED="1")
    runner = Runner(env)
    for signum in HANDLED_SIGNALS:
        signal.signal(signum, runner.on_signal)
    # SIGTERM to `make` alone must stop the stack too (make forwards it, but not SIGKILL).
    set_parent_death_signal()
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
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokenpool.settings")
    sys.exit(main(sys.argv[1:]))
