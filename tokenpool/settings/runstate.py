"""What a running `make run` of this checkout wrote about itself (``var/run.json``): the ports and URLs
it used. ``manage.py`` commands take them as defaults when the environment does not say otherwise, so
``TOME_PORT=8911 PORT=8001 make run`` in one shell and ``manage.py refill_pool`` in another reach the
same TOME and service. Read by base.py and processes.py; devtools/runner.py writes and removes it."""
from __future__ import annotations

import json
from pathlib import Path

import environ

env = environ.Env()
_ROOT = Path(__file__).resolve().parents[2]

# Run state of this checkout (admin password, development API key, metrics files, run.json); tests
# point it elsewhere.
VAR_DIR = Path(env("TOKENPOOL_VAR_DIR", default="") or _ROOT / "var").resolve()
RUN_STATE_FILE = VAR_DIR / "run.json"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def read_run_state(path: Path = RUN_STATE_FILE) -> dict:
    """The state a live runner wrote to ``path``; {} when there is none or its runner is gone (a
    killed `make run` leaves a stale file behind: ignored)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict) or not isinstance(state.get("pid"), int) or not _alive(state["pid"]):
        return {}
    return state


RUN_STATE = read_run_state()
