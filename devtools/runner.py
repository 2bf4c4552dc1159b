"""`make run`: the whole stack on embedded defaults, in the foreground, supervised.

Start order: embedded PostgreSQL and the settings (a child a stop lets finish: initdb must not be cut half-way) →
TOME emulator, booting beside the bootstrap (migrate, static files, admin user, onboarding demo data,
the development API key; one child process) → initial fill of pool `default` when it is below its
target (best effort, bounded wait: TOME may be down) → qcluster + application server (stock gunicorn on a
loopback port) → the edge proxy (Caddy, devtools/edge.py) on 127.0.0.1:$PORT, HTTPS with ``TLS=1``.

Configuration: ``django.conf.settings`` ("Web server and process runner" in tokenpool/settings/base.py),
loaded by the runner once the database step is done (loading the development settings starts the
embedded PostgreSQL, which must happen in a child of its own session, see below).

Supervision (docs/operations.md, "Process runner"; devtools/supervision.py):
- Signals only recorded; children in sessions of their own with a parent-death signal; an
  idempotent stop bounded by RUNNER_STOP_TIMEOUT (devtools/supervision.py says how and why).
- The qcluster and the emulator are restarted with exponential backoff when they exit. The
  application server or the proxy exiting stops the stack with status 1: the API is what the stack
  is for, and a supervisor above (systemd, a container runtime) restarts the whole stack rather
  than a crash-looping server hiding behind a runner that looks alive.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import sys
from pathlib import Path

import httpx
from django.conf import settings

from devtools import embedded_db
from devtools.edge import EdgeConfig, caddy_command, caddyfile, root_certificate
from devtools.netutil import free_port
from devtools.supervision import HANDLED_SIGNALS, PY, Stopping, Supervisor, log, set_parent_death_signal

DEV_KEY_NAME = "dev-make-run"
# Every scope and grant: the development key also resolves tokens issued before the pool (TOME passthrough).
DEV_KEY_SCOPES = "reserve,lookup,detokenize,pools:read,lookup:any,detokenize:any,lookup:tome,detokenize:tome"
# The bootstrap's exit status when pool `default` is below its target (0: at target, no fill needed;
# saves starting one more Django process on every ordinary restart).
BOOTSTRAP_NEEDS_FILL = 3
# The database step's exit status when it started the embedded server (0: found one running, or
# DATABASE_URL names another server): the run then stops it on exit.
DATABASE_STARTED_HERE = 4


GUNICORN_CONFIG = "deploy/gunicorn.conf.py"  # relative to the repository root (the children's cwd)


def web_command(*, port: int, workers: int | None = None, threads: int | None = None,
                host: str = "127.0.0.1") -> list[str]:
    """The application server's argv: the one place that says which server runs the API.

    Stock gunicorn (gthread) with the deployment's one config file; ``workers``/``threads`` default to
    settings.WEB_WORKERS/WEB_THREADS. It listens on loopback only: the edge proxy (devtools/edge.py) is
    what clients reach. docker/Dockerfile runs the same command (tests/scaleout/test_docker.py)."""
    workers = workers if workers is not None else settings.WEB_WORKERS
    threads = threads if threads is not None else settings.WEB_THREADS
    return [PY, "-m", "gunicorn", "tokenpool.wsgi", "--config", GUNICORN_CONFIG, "--bind", f"{host}:{port}",
            "--workers", str(workers), "--threads", str(threads)]


def edge_config(*, port: int, app_port: int, var: Path, tls: bool) -> EdgeConfig:
    """`make run`'s proxy: 127.0.0.1:``port``, plain HTTP or (``tls``) HTTPS with Caddy's local CA, whose
    root certificate clients trust with ``--cacert var/caddy/pki/authorities/local/root.crt``."""
    scheme = "https" if tls else "http"
    sites = (f"{scheme}://127.0.0.1:{port}", f"{scheme}://localhost:{port}")
    return EdgeConfig(sites=sites, upstream=f"127.0.0.1:{app_port}", storage=var / "caddy",
                      access_log=var / "log" / "access.log", tls="internal" if tls else None,
                      read_timeout=settings.EDGE_READ_TIMEOUT)


class Runner(Supervisor):
    ca_bundle: Path | None = None  # the local CA's root certificate once the proxy serves HTTPS
    run_state: dict[str, object] = {}  # what var/run.json holds once written (replaced, never mutated)

    def start_database(self) -> None:
        """Embedded PostgreSQL (unless DATABASE_URL is set), then this process's settings."""
        # Stop the embedded server on exit only if this run started it (a test run may share it). The
        # step's child says so when it ends; a stop during the step goes by whether one ran before it
        # (stop_server is a no-op when none runs).
        self.owns_database = not embedded_db.is_running()
        log("embedded PostgreSQL (unless DATABASE_URL is set) and settings")
        # In a child of its own session, let finish even when a stop comes: initdb or pg_ctl killed
        # half-way by a signal to the terminal's process group would leave a broken var/pgdata.
        status = self.step("database", [PY, "-m", "devtools.runner", "database"], let_finish=True,
                           ok=(0, DATABASE_STARTED_HERE))
        self.owns_database = status == DATABASE_STARTED_HERE
        # The server is up now: loading the settings here only connects to it (~20 ms).
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
        self.write_run_state(tome_base_url=settings.TOME_BASE_URL,
                             tome_port=settings.TOME_PORT if emulator is not None else None)

        if needs_fill:
            self.initial_fill()
        else:
            log("pool 'default' is at its target")

        self.spawn("qcluster", [PY, "manage.py", "qcluster"], policy="restart")
        base = self.start_web(var)
        self.write_run_state(base_url=base, port=settings.WEB_PORT,
                             ca_bundle=str(self.ca_bundle) if self.ca_bundle else None)
        self._banner(base, var)
        while True:
            self.pause(0.25)
            self.supervise_once()

    def write_run_state(self, **values: object) -> None:
        """var/run.json: the ports and URLs this run uses, for `manage.py` commands started beside it
        (tokenpool/settings/runstate.py reads it while this process lives; removed on stop)."""
        path: Path = settings.RUN_STATE_FILE
        state = {**self.run_state, "pid": os.getpid(), **values}
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(state, indent=1) + "\n")
        os.replace(temporary, path)  # a reader never sees half a file
        self.run_state = state

    def remove_run_state(self) -> None:
        if self.run_state:
            settings.RUN_STATE_FILE.unlink(missing_ok=True)

    def start_web(self, var: Path) -> str:
        """The application server on a loopback port, then the edge proxy in front of it; the base URL."""
        app_port = settings.WEB_APP_PORT or free_port()
        web = self.spawn("web", web_command(port=app_port), policy="fatal")
        if not self.wait_http(f"http://127.0.0.1:{app_port}/healthz", timeout=120, child=web):
            raise RuntimeError(f"the application server did not come up on 127.0.0.1:{app_port}")
        config = edge_config(port=settings.WEB_PORT, app_port=app_port, var=var, tls=settings.WEB_TLS)
        (var / "log").mkdir(parents=True, exist_ok=True)
        config_path = var / "Caddyfile"
        config_path.write_text(caddyfile(config))
        edge = self.spawn("edge", caddy_command(config_path), policy="fatal")
        base = config.sites[0]
        self.ca_bundle = root_certificate(config.storage) if settings.WEB_TLS else None
        if not self.wait_http(f"{base}/healthz", timeout=60, child=edge, verify=self.ca_bundle):
            raise RuntimeError(f"the edge proxy did not come up on {base}")
        return base

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
            readiness = httpx.get(f"{base}/readyz", timeout=10.0, verify=_verify(self.ca_bundle)).json()
            ready = f"{readiness['status']} {readiness['checks']}"
        except (httpx.HTTPError, ValueError, KeyError):
            ready = "unknown"
        password, key = _shown(var / "admin-password.txt"), _shown(var / "dev-api-key.txt")
        cacert = f"--cacert {_shown(self.ca_bundle)} " if self.ca_bundle else ""
        # Paths only: secrets on a console end up in scrollback, screen shares and CI logs.
        print(
            "\n"
            f"  TokenPool is up at {base}   (readiness: {ready})\n"
            f"  Admin:     {base}/admin/   user: admin, password in {password}\n"
            f"  Dashboard: {base}/admin/dashboard/\n"
            f"  API docs:  {base}/api/docs/      Metrics: {base}/metrics\n"
            f"  Dev API key (all scopes, kept across runs) in {key}\n"
            f"  Ports and URLs in {_shown(settings.RUN_STATE_FILE)} (manage.py commands beside this run use them)\n"
            f"  Try: curl -s {cacert}-XPOST -H \"Authorization: Api-Key $(cat {key})\" "
            f"-H 'Content-Type: application/json' -d '{{}}' {base}/api/v1/reservations\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )


def _verify(ca_bundle: Path | None) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=str(ca_bundle)) if ca_bundle is not None else True


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str]) -> int:
    if argv[:1] == ["database"]:
        # The database step's child: loading the settings starts the embedded server if needed; the
        # runner stops it (Runner.owns_database), so no "still running" hint at this child's exit.
        ready = bool(settings.DATABASES)
        started = embedded_db.started_here()
        embedded_db.on_exit("quiet")
        if not ready:
            return 1
        return DATABASE_STARTED_HERE if started else 0
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
        runner.remove_run_state()


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokenpool.settings")
    sys.exit(main(sys.argv[1:]))
