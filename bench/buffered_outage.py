"""Issue 22's outage goal, run by ``manage.py bench_buffered --outage SECONDS``: TokenPool stopped
under 10x the plan's rate; zero TOME calls while the buffer lasts, and how long it lasts.

One client process (``bench/buffered.py --rate``: open loop, buffered, ``tome=`` a TOME emulator)
creates cards at ``rate``; after ``warmup`` seconds the gunicorn master and its workers are
stopped (SIGSTOP to the process group: connections stay open and unanswered, the hardest outage
for a client to notice) for ``outage`` seconds, then continued. TokenPool's own TOME calls go to a
closed port (``bench.http.web_server``), so every call the emulator counts is the client's fallback.
The emulator's counters are polled every 0.25 s; the client reports every card as (time, source).
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.http import ROOT, WebServer, served
from devtools.netutil import free_port
from loadtest.tome_admin import TomeAdmin

POLL_SECONDS = 0.25
TAIL_SECONDS = 10.0  # after the server continues: the client recovers (refills, confirms)


def outage_run(*, server: WebServer, key_file: str, pool: str, rate: float, warmup: float, outage: float,
               say: Callable[[str], None]) -> dict[str, Any]:
    port, admin_token = free_port(), secrets.token_hex(8)
    tome_url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "devtools.tome_emulator", "--port", str(port), "--admin-token", admin_token,
               "--log-level", "WARNING"]
    with served(command, env=dict(os.environ), ready_url=f"{tome_url}/healthz", log_name="bench_tome_emulator.log",
                what="the TOME emulator", ok=lambda status: status == 200):
        admin = TomeAdmin(base_url=tome_url, admin_token=admin_token)
        try:
            return _run(server=server, key_file=key_file, pool=pool, rate=rate, warmup=warmup, outage=outage,
                        tome_url=tome_url, admin=admin, say=say)
        finally:
            admin.close()


def _run(*, server: WebServer, key_file: str, pool: str, rate: float, warmup: float, outage: float, tome_url: str,
         admin: TomeAdmin, say: Callable[[str], None]) -> dict[str, Any]:
    seconds = warmup + outage + TAIL_SECONDS
    client = subprocess.Popen(
        [sys.executable, "-m", "bench.buffered", "--base-url", server.base_url, "--key-file", key_file, "--pool", pool,
         "--rate", str(rate), "--seconds", str(seconds), "--tome-url", tome_url],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    polls: list[tuple[float, int]] = []
    try:
        time.sleep(warmup)
        before = admin.stats().total
        stopped = time.time()
        os.killpg(server.pid, signal.SIGSTOP)
        try:
            while time.time() < stopped + outage:
                polls.append((time.time(), admin.stats().total - before))
                time.sleep(POLL_SECONDS)
        finally:
            os.killpg(server.pid, signal.SIGCONT)
        resumed = time.time()
        out, _ = client.communicate(timeout=seconds + 120)
    finally:
        if client.poll() is None:
            client.kill()
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if client.returncode != 0 or line is None:
        raise RuntimeError(f"bench.buffered --rate exited {client.returncode}")
    result = summarize(json.loads(line[len("RESULT "):]), stopped=stopped, resumed=resumed, polls=polls, rate=rate)
    result.update({"rate": rate, "warmup_s": warmup, "outage_s": outage,
                   "load": " ".join(open("/proc/loadavg").read().split()[:3])})
    say(f"outage {outage:g} s at {rate:g} cards/s (after {warmup:g} s): buffer held {result['held_at_stop']} pairs "
        f"(= {result['held_at_stop'] / rate:.1f} s of demand), lasted "
        f"{'' if result['first_fallback_after_s'] is not None else 'the whole outage, ≥ '}"
        f"{result['buffer_lasted_s']} s; TOME calls "
        f"before the buffer ran dry {result['tome_calls_while_buffer_lasted']}, during the outage "
        f"{result['tome_calls_during_outage']} ({result['fallback_cards']} fallback cards); first fallback "
        f"{result['first_fallback_after_s']} s after the stop; errors {result['errors']}; client {result['metrics']}")
    return result


def summarize(paced: dict[str, Any], *, stopped: float, resumed: float, polls: list[tuple[float, int]],
              rate: float) -> dict[str, Any]:
    cards = paced["cards"]
    during = [c for c in cards if stopped <= c[0] < resumed]
    direct = [c for c in during if c[1] == "client_direct"]
    first_direct = direct[0][0] if direct else None
    dry_at = first_direct if first_direct is not None else resumed
    held = sum(1 for c in during if c[1] == "pool" and c[0] < dry_at)
    first_call = next((t for t, calls in polls if calls > 0), None)
    calls_before_dry = max((calls for t, calls in polls if t < dry_at), default=0)
    return {
        "cards": len(cards), "errors": sum(1 for c in cards if str(c[1]).startswith("error")),
        "held_at_stop": held,
        "buffer_lasted_s": round(dry_at - stopped, 1),
        "buffer_seconds_of_demand": round(held / rate, 1),
        "first_fallback_after_s": round(first_direct - stopped, 1) if first_direct is not None else None,
        "first_tome_call_after_s": round(first_call - stopped, 1) if first_call is not None else None,
        "tome_calls_while_buffer_lasted": calls_before_dry,
        "tome_calls_during_outage": polls[-1][1] if polls else 0,
        "fallback_cards": len(direct),
        "reserve_max_s_during_outage": round(max((c[2] for c in during), default=0.0), 3),
        "metrics": paced["metrics"],
    }
