"""``manage.py loadtest``: the plan's load test at 50K cards/day (contract section 6).

    python manage.py loadtest --base-url http://127.0.0.1:8000 --api-key KEY --approach both \\
        --speedup 100 --duration 60 --json var/loadtest.json --report var/loadtest.html [--find-max]

The logic lives in ``loadtest/``; this command only fills defaults from settings (the TOME
the running stack uses, the pool's namespaces and batch size) and writes the outputs.
"""
from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from loadtest.report import html_report, text_table
from loadtest.runner import ALL_APPROACHES, APPROACHES, LoadtestConfig, run_loadtest
from pool.models import Pool

# The client library's per-call loggers (tokenpool_tome) and httpx's request lines.
QUIET_LOGGERS = ("tokenpool.tome", "tokenpool.client", "httpx", "httpcore")


class Command(BaseCommand):
    help = ("Open-loop load test of the pool approach (TokenPoolClient) and the library approach "
            "(HttpTokenizationLibrary) at cards-per-day × speedup / 86400 cards/s; TOME calls counted by TOME.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--base-url", default=None,
                            help="TokenPool to drive (default: http://127.0.0.1:$PORT when PORT is set, else the "
                                 "running `make run` of this checkout as var/run.json says, else port 8000).")
        parser.add_argument("--api-key", default=None,
                            help="API key with the reserve and detokenize scopes (default $TOKENPOOL_API_KEY).")
        parser.add_argument("--approach", choices=[*ALL_APPROACHES, "both", "all"], default="both",
                            help="both: pool and library (the contract); all: also buffered.")
        parser.add_argument("--cards-per-day", type=int, default=50_000)
        parser.add_argument("--speedup", type=float, default=1.0)
        parser.add_argument("--duration", type=float, default=60.0, help="Seconds of arrivals per approach.")
        parser.add_argument("--json", dest="json_path", default=None, help="Write the section-6 JSON here.")
        parser.add_argument("--report", dest="report_path", default=None,
                            help="Write a self-contained HTML page with the charts here.")
        parser.add_argument("--tome-latency-ms", type=int, default=20,
                            help="TOME latency injected into the emulator for the run (restored afterwards); "
                                 "-1 leaves it as it is.")
        parser.add_argument("--find-max", action="store_true",
                            help="Then double the rate (and bisect) until p99 ≥ 50 ms or errors: the headroom.")
        parser.add_argument("--find-max-start", type=float, default=5.0, help="First find-max rate, cards/s.")
        parser.add_argument("--find-max-limit", type=float, default=2000.0, help="Highest find-max rate tried.")
        parser.add_argument("--step-seconds", type=float, default=10.0, help="Seconds per find-max step.")
        parser.add_argument("--pool", default="default")
        parser.add_argument("--tome-url", default=None, help="The TOME emulator (default settings.TOME_BASE_URL).")
        parser.add_argument("--tome-admin-token", default=None,
                            help="Emulator admin token (default $TOME_EMULATOR_ADMIN_TOKEN or dev-tome-admin).")
        parser.add_argument("--tome-token", default=None, help="TOME client token (default settings.TOME_API_TOKEN).")
        parser.add_argument("--workers", type=int, default=256, help="Client worker threads (open loop).")
        parser.add_argument("--timeout", type=float, default=5.0, help="Per-request timeout of both clients.")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **opts: Any) -> None:
        api_key = opts["api_key"] or settings.TOKENPOOL_API_KEY
        if not api_key:
            raise CommandError("--api-key (or TOKENPOOL_API_KEY) is required: "
                               "python manage.py create_api_key loadtest --scopes reserve,detokenize")
        if opts["speedup"] <= 0 or opts["duration"] <= 0 or opts["cards_per_day"] <= 0:
            raise CommandError("--cards-per-day, --speedup and --duration must be positive")
        ns1, ns2, batch_size = self._pool_facts(opts["pool"])
        latency = opts["tome_latency_ms"]
        config = LoadtestConfig(
            base_url=opts["base_url"] or settings.WEB_BASE_URL,
            api_key=api_key,
            approaches={"both": APPROACHES, "all": ALL_APPROACHES}.get(opts["approach"], (opts["approach"],)),
            cards_per_day=opts["cards_per_day"], speedup=opts["speedup"], duration=opts["duration"],
            pool=opts["pool"], tome_url=opts["tome_url"] or settings.TOME_BASE_URL,
            tome_token=opts["tome_token"] or settings.TOME_API_TOKEN,
            tome_admin_token=opts["tome_admin_token"] or settings.TOME_EMULATOR_ADMIN_TOKEN,
            ns1=ns1, ns2=ns2, tome_latency_ms=None if latency < 0 else latency, timeout=opts["timeout"],
            workers=opts["workers"], find_max=opts["find_max"], find_max_start=opts["find_max_start"],
            find_max_limit=opts["find_max_limit"], step_seconds=opts["step_seconds"],
            refill_batch_size=batch_size, progress=not opts["no_progress"],
        )
        try:
            with _quiet_client_logs(verbosity=opts["verbosity"]):
                report = run_loadtest(config, log=lambda line: self.stderr.write(line))
        except httpx.HTTPError as exc:
            raise CommandError(f"the TOME emulator's admin API at {config.tome_url} failed ({type(exc).__name__}: "
                               f"{exc}); the load test counts TOME calls with the emulator's own counters, so it "
                               "needs --tome-url (default settings.TOME_BASE_URL) and --tome-admin-token") from None
        except RuntimeError as exc:
            raise CommandError(str(exc)) from None
        report["command"] = _command_line(opts)
        self.stdout.write(text_table(report))
        if opts["json_path"]:
            _write(opts["json_path"], json.dumps(report, indent=2))
        if opts["report_path"]:
            _write(opts["report_path"], html_report(report, command=report["command"]))
        duplicates = sum(a["duplicates"] for a in report["approaches"].values())
        duplicates += report["duplicates_across_approaches"]
        duplicates += sum(step["duplicates"] for found in report.get("find_max", {}).values()
                          for step in found["steps"])
        if duplicates:
            # A pair handed out twice breaks the contract's first rule: fail loudly, not just in a table.
            raise CommandError(f"{duplicates} duplicate pair(s) received")

    @staticmethod
    def _pool_facts(name: str) -> tuple[str, str, int | None]:
        """The pool's TOME namespaces and batch size when this database has it, else the settings'."""
        try:
            pool = Pool.objects.filter(name=name).first()
        except Exception:  # noqa: BLE001 - the load test may drive a TokenPool whose database is elsewhere
            pool = None
        if pool is None:
            return settings.TOME_NS1, settings.TOME_NS2, None
        return pool.ns1_namespace, pool.ns2_namespace, pool.batch_size


@contextmanager
def _quiet_client_logs(*, verbosity: int) -> Iterator[None]:
    """Quiet by default: the progress bar and the result. Every TOME and client call is logged as a JSON
    line by the client library; those only with -v 2 (or more). Restored afterwards: under call_command
    the process (and its logging) goes on."""
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    if verbosity < 2:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _command_line(opts: dict[str, Any]) -> str:
    """The invocation as a shareable line (also under call_command): every option that differs from
    its default, never the API key or the TOME tokens."""
    defaults = {"approach": "both", "cards_per_day": 50_000, "speedup": 1.0, "duration": 60.0,
                "tome_latency_ms": 20, "find_max": False, "find_max_start": 5.0, "find_max_limit": 2000.0,
                "step_seconds": 10.0, "pool": "default", "workers": 256, "timeout": 5.0}
    words = ["python", "manage.py", "loadtest"]
    if opts.get("base_url"):
        words += ["--base-url", opts["base_url"]]
    words += ["--api-key", "$KEY"]
    for name, default in defaults.items():
        value = opts.get(name)
        if value is None or value == default:
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            words.append(flag)
        else:
            words += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    for name, flag in (("json_path", "--json"), ("report_path", "--report"), ("tome_url", "--tome-url")):
        if opts.get(name):
            words += [flag, opts[name]]
    return shlex.join(words).replace("'$KEY'", "$KEY")


def _write(path: str, text: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
