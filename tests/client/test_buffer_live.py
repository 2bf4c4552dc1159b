"""The buffered TokenPoolClient against a real TokenPool (issue 22): four processes, one killed with
SIGKILL mid-way, never hand out the same pair twice; a clean close leaves nothing to expire (0
waste); the killed process wastes at most one buffer."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

import pytest

from tests.fixtures.processes import ROOT

pytestmark = pytest.mark.slow

CARDS = 300
KILL_AFTER = 100
MAX_BUFFER = 2500  # at most 4 batches of 500 in flight beside what is held (tokenpool_tome/buffer.py)

WORKER = """
import json, sys
from tokenpool_tome import TokenPoolClient
url, key, pool, cards = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = TokenPoolClient(url, key, pool=pool, timeout=30.0, buffer=True, buffer_seconds=30.0)
for _ in range(cards):
    card = client.reserve()
    client.confirm(card, wait=False)
    print("card", card.reservation_id, card.internal_token, client.metrics["buffered"], flush=True)
client.close()
print("metrics", json.dumps(client.metrics), flush=True)
"""


def _start(url: str, raw_key: str, pool: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WORKER, url, raw_key, pool, str(CARDS)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _cards(lines: list[str]) -> list[list[str]]:
    return [line.split()[1:] for line in lines if line.startswith("card ")]


def test_four_processes_one_killed_never_share_a_pair_and_a_clean_close_wastes_nothing(
        live_server: Any, make_pool: Any, make_api_key: Any) -> None:
    from pool.models import PairStatus, TokenPair

    pool = make_pool(pairs=4000, refill_enabled=False)
    keys = [make_api_key() for _ in range(4)]
    workers = [_start(live_server.url, raw, pool.name) for _, raw in keys]

    killed_lines: list[str] = []
    for line in workers[0].stdout:  # type: ignore[union-attr]
        killed_lines.append(line)
        if len(killed_lines) == KILL_AFTER:
            workers[0].send_signal(signal.SIGKILL)
            break
    workers[0].wait(timeout=60)
    outputs = [killed_lines] + [w.communicate(timeout=600)[0].splitlines() for w in workers[1:]]
    assert all(w.returncode == 0 for w in workers[1:])

    tokens = [card[1] for lines in outputs for card in _cards(lines)]
    assert len(tokens) == len(set(tokens)) >= KILL_AFTER + 3 * CARDS  # never the same pair twice
    for (key, _), lines in zip(keys, outputs, strict=True):
        ids = {card[0] for card in _cards(lines)}
        assert TokenPair.objects.filter(reservation_id__in=ids, reserved_by=key).count() == len(ids)

    for (key, _), lines in zip(keys[1:], outputs[1:], strict=True):
        metrics = json.loads(next(line for line in lines if line.startswith("metrics "))[len("metrics "):])
        mine = TokenPair.objects.filter(reserved_by=key)
        assert mine.filter(status=PairStatus.RESERVED).count() == 0  # nothing left to expire
        assert mine.filter(status=PairStatus.USED).count() == CARDS == metrics["confirms_sent"]
        assert mine.filter(status=PairStatus.RETIRED).count() == metrics["released"]
        assert metrics["waste"] == 0 and metrics["confirms_lost"] == 0 and metrics["handed_out"] == CARDS

    killed_key = keys[0][0]
    handed = {card[0] for card in _cards(killed_lines)}
    left = {str(rid) for rid in TokenPair.objects.filter(reserved_by=killed_key, status=PairStatus.RESERVED)
            .values_list("reservation_id", flat=True)}
    never_handed_out = left - handed  # what the crash wasted: its leases will expire (RETIRED)
    assert len(never_handed_out) <= MAX_BUFFER
    assert len(never_handed_out) <= int(_cards(killed_lines)[-1][2]) + 4 * 500
