"""Issue 21.5: `make run` writes the ports it used to var/run.json, and `manage.py` commands started
beside it (another shell, no PORT or TOME_PORT in their environment) reach its TOME and its service.
The environment still wins; a file left by a killed run is ignored."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.processes import ROOT
from tests.runner.stack import Stack

SHOW = "from django.conf import settings as s; print(s.TOME_BASE_URL, s.WEB_BASE_URL)"


def _manage(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180, check=False)
    assert not check or done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def _another_shell(env: dict[str, str]) -> dict[str, str]:
    """The stack's checkout (var dir, database) as a second terminal sees it: no ports in the environment."""
    env = dict(env)
    for name in ("PORT", "TOME_PORT", "TOME_BASE_URL", "TLS"):
        env.pop(name, None)
    return env


def _shown(env: dict[str, str]) -> list[str]:
    return _manage(env, "shell", "-c", SHOW).stdout.strip().splitlines()[-1].split()


@pytest.mark.slow
def test_manage_py_beside_make_run_uses_its_ports_from_var_run_json(make_stack, stack_home):
    stack: Stack = make_stack().start()
    stack.wait_up()
    run_file = stack_home / "var" / "run.json"
    state = json.loads(run_file.read_text())
    tome_url = f"http://127.0.0.1:{stack.tome_port}"
    assert state["base_url"] == stack.base_url and state["port"] == stack.port
    assert state["tome_base_url"] == tome_url and state["tome_port"] == stack.tome_port

    shell = _another_shell(stack.env)
    assert _shown(shell) == [tome_url, stack.base_url]
    # The refill reaches the stack's emulator (it used to call :8900 and record a failed run).
    refill = _manage(shell, "refill_pool", "--pool", "default", "--count", "100")
    assert "outcome=succeeded" in refill.stdout and "inserted=100" in refill.stdout
    # The environment still says otherwise when it wants to.
    assert _shown({**shell, "TOME_PORT": "8911", "PORT": "8123"}) == ["http://127.0.0.1:8911",
                                                                      "http://127.0.0.1:8123"]

    stack.signal_group_twice(gap=0.001)
    assert stack.wait_exit() == 0
    stack.assert_nothing_left()
    assert not run_file.exists()  # removed on stop: nothing points at the stopped stack's ports
    assert _shown(shell) == ["http://127.0.0.1:8900", "http://127.0.0.1:8000"]


def test_a_run_file_of_a_dead_runner_is_ignored(tmp_path: Path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    env = _another_shell(dict(os.environ, TOKENPOOL_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="tokenpool.settings"))
    state = {"tome_base_url": "http://127.0.0.1:8931", "tome_port": 8931, "base_url": "http://127.0.0.1:8132"}
    (tmp_path / "run.json").write_text(json.dumps({**state, "pid": dead.pid}))
    assert _shown(env) == ["http://127.0.0.1:8900", "http://127.0.0.1:8000"]
    (tmp_path / "run.json").write_text(json.dumps({**state, "pid": os.getpid()}))  # a live runner
    assert _shown(env) == ["http://127.0.0.1:8931", "http://127.0.0.1:8132"]
