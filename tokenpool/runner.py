"""`make run`: the whole stack on embedded defaults, in the foreground.

Order matters: database → migrate → TOME emulator → onboarding demo data → fill the default pool →
qcluster + gunicorn. Ctrl-C / SIGTERM stops every child (each in its own process group) and waits.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
children: list[subprocess.Popen] = []


def log(message: str) -> None:
    print(f"[make run] {message}", flush=True)


def manage(*args: str, env: dict[str, str], capture: bool = False) -> str:
    result = subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=env, check=True, text=True,
                            stdout=subprocess.PIPE if capture else None)
    return result.stdout if capture else ""


def spawn(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    log(f"starting {name}: {' '.join(argv)}")
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True)
    proc.name = name  # type: ignore[attr-defined]
    children.append(proc)
    return proc


def stop_all(*_: object) -> None:
    # A second Ctrl-C / SIGTERM (e.g. from `make` itself) must not abandon children mid-shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for proc in reversed(children):
        if proc.poll() is None:
            # SIGTERM to the main process only: gunicorn's master and qcluster's guard stop their own
            # workers in order (qcluster hangs when its whole group is signalled at once).
            proc.terminate()
    deadline = time.monotonic() + 15
    for proc in reversed(children):
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    log("all processes stopped")


def wait_http(url: str, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up within {timeout:.0f}s")


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt  # SIGTERM takes the same clean path as Ctrl-C


def admin_password() -> str:
    path = ROOT / "var" / "admin-password.txt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(12))
        path.chmod(0o600)
    return path.read_text().strip()


def _die_with_parent() -> None:
    """SIGTERM to `make` must stop the stack too: make does not forward signals to its recipe, so
    ask the kernel to send us SIGTERM when our parent dies (Linux), and poll as a fallback."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main() -> int:
    _die_with_parent()
    parent = os.getppid()
    port = int(os.environ.get("PORT", "8000"))
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tokenpool.settings", PYTHONUNBUFFERED="1")
    metrics_dir = ROOT / "var" / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)  # multiprocess metrics start fresh with the stack
    metrics_dir.mkdir(parents=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)

    signal.signal(signal.SIGTERM, _raise_interrupt)
    owns_database = False
    if not env.get("DATABASE_URL"):
        from tokenpool import embedded_db

        # Stop the embedded server on exit only if this run started it (a test run may share it).
        owns_database = not embedded_db.is_running()
        embedded_db.ensure_database(env.get("EMBEDDED_DATABASE_NAME", "tokenpool"))
    try:
        log("embedded PostgreSQL + migrations")
        manage("migrate", "--no-input", "-v0", env=env)
        manage("collectstatic", "--no-input", "-v0", env=env)  # served by whitenoise
        password = admin_password()
        # The password travels in the environment, not argv, so `ps` never shows it.
        manage("ensure_admin", "--username", "admin", env=dict(env, TOKENPOOL_ADMIN_PASSWORD=password))

        if not env.get("TOME_BASE_URL"):
            tome_port = env.get("TOME_PORT", "8900")
            env["TOME_BASE_URL"] = f"http://127.0.0.1:{tome_port}"
            spawn("tome-emulator", [PY, "manage.py", "tome_emulator", "--port", tome_port], env)
            wait_http(f"{env['TOME_BASE_URL']}/healthz")
        log(f"TOME at {env['TOME_BASE_URL']}")

        # Development demo data: UAT onboarding approved (by two demo users, four-eyes) so the
        # readiness gate lets the UAT pool refill.
        manage("load_onboarding_plan", "--approve-environment", "UAT", env=env)
        log("filling pool 'default' to its target (startup refill)")
        manage("refill_pool", "--pool", "default", "--trigger", "startup", env=env)
        dev_key = manage("create_api_key", f"dev-{int(time.time())}", "--scopes",
                         "reserve,lookup,detokenize,pools:read", env=env, capture=True).strip().splitlines()[-1]

        spawn("qcluster", [PY, "manage.py", "qcluster"], env)
        spawn("web", [PY, "-m", "gunicorn", "tokenpool.wsgi", "--bind", f"127.0.0.1:{port}",
                      "--worker-class", "gthread", "--workers", env.get("WEB_WORKERS", "2"),
                      "--threads", env.get("WEB_THREADS", "4"), "--graceful-timeout", "10"], env)
        wait_http(f"http://127.0.0.1:{port}/healthz")
        base = f"http://127.0.0.1:{port}"
        print(
            "\n"
            f"  TokenPool is up at {base}\n"
            f"  Admin:     {base}/admin/   (user: admin  password: {password})\n"
            f"  Dashboard: {base}/admin/dashboard/\n"
            f"  API docs:  {base}/api/docs/      Metrics: {base}/metrics\n"
            f"  Dev API key (all scopes, shown once): {dev_key}\n"
            f"  Try: curl -s -XPOST -H 'Authorization: Api-Key {dev_key}' -H 'Content-Type: application/json' "
            f"-d '{{}}' {base}/api/v1/reservations\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        while True:
            if os.getppid() != parent:
                log("parent process went away; stopping the stack")
                return 1
            for proc in children:
                if proc.poll() is not None:
                    log(f"{proc.name} exited with {proc.returncode}; stopping the stack")  # type: ignore[attr-defined]
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        log("stopping")
        return 0
    except subprocess.CalledProcessError as exc:
        log(f"step failed: {exc}")
        return 1
    finally:
        stop_all()
        if owns_database:
            from tokenpool import embedded_db

            embedded_db.stop_server()
            log("embedded PostgreSQL stopped")


if __name__ == "__main__":
    sys.exit(main())
