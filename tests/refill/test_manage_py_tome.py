"""Contract section 1: every ``python manage.py ...`` reaches the same TOME as the running ``make run``,
which starts its emulator on ``TOME_PORT`` unless ``TOME_BASE_URL`` names another TOME."""
from __future__ import annotations

import subprocess
import sys

import pytest

from pool.models import TokenPair
from tests.fixtures.processes import ROOT


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.mark.django_db(transaction=True)
def test_refill_pool_reaches_the_emulator_on_tome_port(refill_ready, make_pool, child_env):
    pool = make_pool("cli-tome-port", target_size=200, batch_size=100)
    env = child_env(refill_ready, TOME_PORT=str(refill_ready.port))
    del env["TOME_BASE_URL"]  # only the port, as `TOME_PORT=8911 make run` leaves it

    _manage(env, "refill_pool", "--pool", pool.name)

    assert TokenPair.objects.filter(pool=pool).count() == 200
    ok_calls = sum(ops.get("ok", 0) for namespace in refill_ready.stats().values() for ops in namespace.values())
    assert ok_calls >= 2  # this emulator (and no other TOME) made the pairs: NS1 and NS2 at least once each


def test_tome_base_url_wins_over_tome_port(child_env):
    env = child_env(TOME_PORT="8911", TOME_BASE_URL="http://tome.example:9000")
    shown = _manage(env, "shell", "-c", "from django.conf import settings; print(settings.TOME_BASE_URL)")
    assert shown.stdout.strip().splitlines()[-1] == "http://tome.example:9000"
    del env["TOME_BASE_URL"]
    shown = _manage(env, "shell", "-c", "from django.conf import settings; print(settings.TOME_BASE_URL)")
    assert shown.stdout.strip().splitlines()[-1] == "http://127.0.0.1:8911"
