"""`make bench`: the benchmark suite on embedded defaults, written into docs/benchmarks.md.

Starts what the benchmarks need by itself (like `make run`, but on free ports and in its own
database ``tokenpool_bench`` of the embedded PostgreSQL, so a running `make run` keeps its pool):
migrations, UAT onboarding approved, a TOME emulator, the default pool filled, an API key, the
django-q2 cluster, gunicorn and the edge proxy in front of it exactly as `make run` serves it
(devtools.runner.edge_config: Caddy on a free port, plain HTTP; ``PORT`` points there, so the load
test's pool approaches go through the proxy). Then it runs every entry of ``SUITE`` as ``manage.py …`` with the
stack's environment, and rewrites the section of docs/benchmarks.md between ``BEGIN`` and ``END``
(machine facts, each command, its numbers). The hand-written analysis around it is left alone.

Add a benchmark by appending a ``Bench`` to ``SUITE`` (``{out}`` in an argument is the output
folder ``var/bench``); ``summarize`` may turn its JSON output into a Markdown table.

    make bench                              # everything (about 15 minutes on 2 cores)
    make bench BENCH_ARGS="--only loadtest-x100 --no-docs"
    make bench BENCH_ARGS=--quick           # a few minutes: checks the suite, writes no docs
    .venv/bin/python -m bench.suite --list
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devtools import embedded_db
from devtools.edge import caddy_command, caddyfile
from devtools.netutil import free_port, wait_answering
from devtools.runner import edge_config, web_command

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
OUT = ROOT / "var" / "bench"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
DATABASE = "tokenpool_bench"


@dataclass(frozen=True)
class Bench:
    name: str
    argv: list[str]  # manage.py arguments; "{out}" is replaced by var/bench
    what: str
    timeout: int = 1800
    summarize: Callable[[Path], str] | None = None  # Markdown from the entry's JSON (optional)
    json_name: str | None = None
    quick: dict[str, str] = field(default_factory=dict)  # --quick: option -> smaller value


# ---- summaries -----------------------------------------------------------------------------------

def _cut(summary: dict[str, Any]) -> str:
    return " / ".join("-" if summary[k] is None else f"{summary[k]:.1f}" for k in ("p50", "p95", "p99", "max"))


def loadtest_summary(path: Path) -> str:
    data = json.loads(path.read_text())
    config = data["config"]
    lines = [(f"{config['cards_per_day']:,} cards/day × {config['speedup']:g} = {config['rate_per_second']} cards/s "
             f"for {config['duration']:g} s per approach, TOME latency {data['tome']['latency_ms']} ms:"), "",
             ("| approach | cards | errors | duplicates | create ms p50 / p95 / p99 / max "
              "| detokenize ms p50 / p95 / p99 / max | TOME calls | TOME calls per card | client start lag p99 ms |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in data["approaches"].items():
        per_card = row["tome_calls_per_card"]
        by_code = ", ".join(f"{k} {v}" for k, v in row["errors_by_code"].items())
        behind = " (client fell behind)" if row["client"]["fell_behind"] else ""
        lines.append(f"| {name} | {row['cards']} | {row['errors']}{f' ({by_code})' if row['errors'] else ''}"
                     f" | {row['duplicates']} | {_cut(row['latency_ms']['create'])} "
                     f"| {_cut(row['latency_ms']['detokenize'])} "
                     f"| {row['tome_calls']} | {'-' if per_card is None else f'{per_card:.4f}'} "
                     f"| {row['client']['start_lag_ms']['p99']}{behind} |")
    comparison = data.get("comparison", {})
    rows = comparison.get("tome_calls_per_day", {})
    if rows:
        lines += ["", "TOME calls per day at 50,000 cards/day, measured next to the plan's projection:", "",
                  "| approach | measured | plan | basis |", "|---|---|---|---|"]
        for name, row in rows.items():
            measured = row["measured_tome_calls_per_day"]
            lines.append(f"| {name} | {'-' if measured is None else f'{measured:,}'} "
                         f"| {row['plan_tome_calls_per_day']:,} | {row.get('basis', row.get('note', ''))} |")
    for name, found in data.get("find_max", {}).items():
        lines += ["", f"find-max, {name} ({found['step_seconds']:g} s per step; {found['criterion']}):", "",
                  "| cards/s | cards | create p99 ms | detokenize p99 ms | errors | result |",
                  "|---|---|---|---|---|---|"]
        for step in found["steps"]:
            lines.append(f"| {step['rate']:g} | {step['cards']} | {step['create_ms']['p99']} "
                         f"| {step['detokenize_ms']['p99']} | {step['errors']} | {'ok' if step['ok'] else 'broken'}"
                         f"{' (client behind)' if step['client_fell_behind'] else ''} |")
        if found["max_rate"] is None:
            lines.append(f"\n**{name}: no rate met the criterion** ({found['stopped_because']}).")
        else:
            lines.append(f"\n**{name}: highest sustained rate {found['max_rate']:g} cards/s = headroom "
                         f"{found['headroom']:g}× the plan's 0.58 cards/s** (stopped: {found['stopped_because']}).")
    return "\n".join(lines)


SUITE: list[Bench] = [
    Bench("loadtest-50k",
          ["loadtest", "--approach", "both", "--speedup", "1", "--duration", "120", "--json", "{out}/loadtest-50k.json",
           "--no-progress"],
          "the plan's load test at 50,000 cards/day in real time (0.58 cards/s), both approaches",
          summarize=loadtest_summary, json_name="loadtest-50k.json", quick={"--duration": "10"}),
    Bench("loadtest-x100",
          ["loadtest", "--approach", "all", "--speedup", "100", "--duration", "60",
           "--json", "{out}/loadtest-x100.json",
           "--report", "{out}/loadtest-x100.html", "--no-progress"],
          "the same at 100× the plan's rate (57.9 cards/s), with the buffered client (issue 22) as a third approach",
          summarize=loadtest_summary, json_name="loadtest-x100.json",
          quick={"--duration": "5"}),
    Bench("loadtest-find-max",
          ["loadtest", "--approach", "both", "--speedup", "10", "--duration", "10", "--find-max",
           "--json", "{out}/loadtest-find-max.json", "--report", "{out}/loadtest-find-max.html", "--no-progress"],
          "the headroom: rate doubled (then bisected) until p99 ≥ 50 ms or errors",
          summarize=loadtest_summary, json_name="loadtest-find-max.json",
          quick={"--duration": "3", "--step-seconds": "3", "--find-max-limit": "40"}),
    Bench("reserve", ["bench_reserve", "--pairs", "10000", "--threads", "1,4,16", "--http-seconds", "5"],
          "reservations: the service, the claim alone (raw SQL vs ORM), pgbench, HTTP through gunicorn + wrk",
          quick={"--pairs": "1000", "--threads": "1,4", "--http-seconds": "2"}),
    # Issue 13's HTTP goals in one run: HTTP reserve / pgbench of the claim, p99 at 16 connections,
    # HTTP batch / pgbench batch, and TokenPool / the naive peer (bench/naive_peer), interleaved.
    Bench("http-goals", ["bench_http_goals", "--seconds", "5", "--rounds", "3"],
          "issue 13 §4: HTTP reserve and batches vs pgbench of the same claims, and vs a naive Django+DRF peer; "
          "issue 19: reservations through the edge proxy as make run serves them",
          quick={"--seconds": "1", "--rounds": "1"}),
    # Issue 22: the buffered TokenPoolClient beside the naive peer and the unbuffered client, 1 × 16 and
    # 2 × 8 threads; then TokenPool stopped for 60 s under 10× the plan's rate (the outage run).
    Bench("buffered", ["bench_buffered", "--seconds", "5", "--warmup", "2", "--outage", "60"],
          "issue 22: buffered reserve() p50/p99 and cards/s vs the naive peer, unbuffered, and pgbench of the "
          "single claim; TokenPool stopped 60 s at 10x the plan's rate: TOME calls while the buffer lasts",
          quick={"--seconds": "1", "--warmup": "1", "--pairs": "20000", "--outage": "5", "--outage-warmup": "5"}),
    Bench("refill", ["bench_refill", "--pairs", "50000"], "a refill against a zero-latency emulator",
          quick={"--pairs": "5000"}),
    Bench("monitoring-request-costs", ["bench_monitoring", "--request-costs"], "a /metrics scrape and one log line"),
    # Its own PostgreSQL cluster (var/bench_claim_pg); the 10M-row history table is built once (~20 min
    # on 2 busy cores) and kept there for later runs.
    Bench("claim", ["bench_claim", "--seconds", "8", "--snapshot-seconds", "60", "--history-rows", "10000000",
                    "--rounds", "3"],
          "the claim at any table shape: planner cliff, held snapshot, _like indexes, 10M rows of history",
          timeout=7200,
          quick={"--seconds": "2", "--snapshot-seconds": "10", "--history-rows": "50000", "--rounds": "1",
                 "--scale": "0.05", "--database": "bench_claim_quick"}),
]


# ---- the stack -------------------------------------------------------------------------------------

def _log(message: str) -> None:
    print(f"[make bench] {message}", flush=True)


@dataclass
class Stack:
    env: dict[str, str]
    children: list[subprocess.Popen] = field(default_factory=list)
    base_url: str = ""

    def manage(self, *args: str, capture: bool = False) -> str:
        result = subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=self.env, check=True, text=True,
                                stdout=subprocess.PIPE if capture else subprocess.DEVNULL)
        return result.stdout if capture else ""

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        with open(OUT / f"{name}.log", "ab") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.children.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.children):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.children):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()


def _wait_http(url: str, proc: subprocess.Popen, *, timeout: float = 60.0) -> None:
    if not wait_answering(url, process=proc, ok=lambda status: status < 500, timeout=timeout):
        raise SystemExit(f"[make bench] {url} did not come up within {timeout:.0f} s (exit status {proc.poll()}); "
                         "see var/bench/*.log")


def start_stack() -> Stack:
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tokenpool.settings", PYTHONUNBUFFERED="1", LOG_LEVEL="WARNING")
    if not env.get("DATABASE_URL"):
        env["EMBEDDED_DATABASE_NAME"] = DATABASE
        embedded_db.ensure_database(DATABASE)
    metrics = OUT / "prometheus"
    if metrics.exists():
        for item in metrics.iterdir():
            item.unlink()
    metrics.mkdir(parents=True, exist_ok=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    stack = Stack(env=env)
    _log(f"database {env.get('EMBEDDED_DATABASE_NAME', '$DATABASE_URL')}: migrate, approve UAT onboarding")
    stack.manage("migrate", "--no-input", "-v0")
    stack.manage("load_onboarding_plan", "--approve-environment", "UAT")
    tome_port = free_port()
    env["TOME_BASE_URL"] = f"http://127.0.0.1:{tome_port}"
    env.setdefault("TOME_EMULATOR_ADMIN_TOKEN", "dev-tome-admin")
    # `python -m devtools.tome_emulator` (not manage.py) for --log-level: no JSON line per TOME call.
    tome = stack.spawn("tome-emulator", [PY, "-m", "devtools.tome_emulator", "--port", str(tome_port),
                                         "--admin-token", env["TOME_EMULATOR_ADMIN_TOKEN"], "--log-level", "WARNING"])
    _wait_http(f"{env['TOME_BASE_URL']}/healthz", tome)
    _log(f"TOME emulator on {env['TOME_BASE_URL']}; filling pool 'default'")
    stack.manage("refill_pool", "--pool", "default")
    key = stack.manage("create_api_key", f"bench-{secrets.token_hex(3)}", "--scopes",
                       "reserve,lookup,detokenize,pools:read", "--rate-limit", "1000000",
                       capture=True).strip().splitlines()[-1]
    env["TOKENPOOL_API_KEY"] = key  # read by loadtest; never on a command line
    stack.spawn("qcluster", [PY, "manage.py", "qcluster"])
    # web_command and edge_config read the sizes and the read deadline from the settings, as `make run` does.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", env["DJANGO_SETTINGS_MODULE"])
    if "EMBEDDED_DATABASE_NAME" in env:
        os.environ.setdefault("EMBEDDED_DATABASE_NAME", env["EMBEDDED_DATABASE_NAME"])
    # The application server `make run` and the Dockerfile run (deploy/gunicorn.conf.py) on a loopback
    # port, and the edge proxy `make run` puts in front of it: what clients reach, so the numbers are its.
    app_port = free_port()
    web_argv = web_command(port=app_port)
    web = stack.spawn("web", [*web_argv, "--log-level", "warning"])
    _wait_http(f"http://127.0.0.1:{app_port}/healthz", web)
    port = free_port()
    edge_var = OUT / "edge"
    (edge_var / "log").mkdir(parents=True, exist_ok=True)
    (edge_var / "Caddyfile").write_text(caddyfile(edge_config(port=port, app_port=app_port, var=edge_var, tls=False)))
    stack.base_url = f"http://127.0.0.1:{port}"
    env["PORT"] = str(port)  # loadtest's default --base-url: through the proxy
    edge = stack.spawn("edge", caddy_command(edge_var / "Caddyfile"))
    _wait_http(f"{stack.base_url}/healthz", edge)
    size = f"{web_argv[web_argv.index('--workers') + 1]} workers x {web_argv[web_argv.index('--threads') + 1]} threads"
    _log(f"TokenPool (Caddy on {stack.base_url} in front of gunicorn {size} on port {app_port}; qcluster)")
    return stack


# ---- facts and the document --------------------------------------------------------------------

def machine_facts(env: dict[str, str]) -> dict[str, str]:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    ram = "unknown"
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        ram = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        pass
    postgres = subprocess.run(
        [PY, "-c", ("import django; django.setup(); from django.db import connection; "
                   "c = connection.cursor(); c.execute('SHOW server_version'); print(c.fetchone()[0])")],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False).stdout.strip() or "unknown"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=False).stdout.strip()
    return {"cpu": cpu, "cores": str(os.cpu_count()), "ram": ram, "python": platform.python_version(),
            "postgres": postgres, "commit": commit, "os": platform.platform()}


def render_block(result: dict[str, Any]) -> str:
    """One benchmark's part of the section: when it ran, under what load, its command and numbers."""
    bench: Bench = result["bench"]
    load = result["load"]
    lines = [f"### {bench.name}: {bench.what}", "",
             (f"Ran {result['started']:%Y-%m-%d %H:%M} UTC for {result['seconds']:.0f} s, load average "
             f"{load[0]:.1f} → {load[1]:.1f}."), "", "```", f"$ {result['command']}", "```", ""]
    if result["status"] != 0:
        lines += [f"**Exit status {result['status']}** (full output: `var/bench/{bench.name}.out`).", ""]
    if result.get("summary"):
        lines += [result["summary"], ""]
    lines += ["Output:", "", "```", result["output"].rstrip(), "```", ""]
    return "\n".join(lines)


def render(blocks: dict[str, str], facts: dict[str, str]) -> str:
    """The whole generated section: this run's machine facts, then one block per SUITE entry (blocks of
    entries not run this time, e.g. with --only, are kept from the previous section)."""
    lines = [
        BEGIN,
        "## Generated by `make bench`",
        "",
        ("Everything between the `bench:begin`/`bench:end` markers is rewritten by `make bench`"
        " (`bench/suite.py`); edit the analysis outside them."),
        "",
        (f"Machine (last run, commit `{facts['commit']}`): {facts['cpu']}, {facts['cores']} cores, {facts['ram']} RAM, "
        f"{facts['os']}; Python {facts['python']}, PostgreSQL {facts['postgres']} (embedded, database `{DATABASE}`). "
        "TokenPool under test: the edge proxy (Caddy, as `make run` serves it) in front of stock gunicorn gthread "
        "(deploy/gunicorn.conf.py) + the django-q2 cluster + a TOME emulator, all started by `make bench` on the "
        "same cores as the load generator; the load test's pool approaches go through the proxy. "
        "**The machine is shared with other engineers' test runs (see each block's load average; 2 cores), "
        "so single numbers are noisy: compare runs, not digits.**"),
        "",
    ]
    lines += [blocks[bench.name] for bench in SUITE if bench.name in blocks]
    lines.append(END)
    return "\n".join(lines)


def previous_blocks() -> dict[str, str]:
    """The blocks of the section now in the document, by benchmark name."""
    if not DOC.exists():
        return {}
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        return {}
    body = text.split(BEGIN, 1)[1].split(END, 1)[0]
    blocks: dict[str, str] = {}
    # Split at the blocks' own headings only: a benchmark's output may carry "### " lines of its own
    # (bench_claim's "### cold"), which used to cut its block short on the next --only run.
    names = "|".join(re.escape(bench.name) for bench in SUITE)
    for part in re.split(rf"(?m)^(?=### (?:{names}): )", body)[1:]:
        name = part[4:].split(":", 1)[0].strip()
        blocks[name] = part.rstrip("\n") + "\n"
    return blocks


def write_doc(section: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.write_text(text)


def _argv(bench: Bench, *, quick: bool) -> list[str]:
    argv = [arg.replace("{out}", str(OUT.relative_to(ROOT))) for arg in bench.argv]
    if quick:
        for option, value in bench.quick.items():
            if option in argv:
                argv[argv.index(option) + 1] = value
            else:
                argv += [option, value]
    return argv


def run_bench(bench: Bench, stack: Stack, *, quick: bool = False) -> dict[str, Any]:
    argv = _argv(bench, quick=quick)
    command = "python manage.py " + shlex.join(argv)
    _log(f"{bench.name}: {command}")
    load_before, started_at = os.getloadavg()[0], datetime.now(UTC)
    started = time.monotonic()
    try:
        proc = subprocess.run([PY, "manage.py", *argv], cwd=ROOT, env=stack.env, capture_output=True, text=True,
                              timeout=bench.timeout, check=False)
        status, output, errors = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout or ""
        status, output, errors = -1, partial.decode() if isinstance(partial, bytes) else partial, ""
    seconds = time.monotonic() - started
    (OUT / f"{bench.name}.out").write_text(output + ("\n--- stderr ---\n" + errors if errors else ""))
    print(output, flush=True)
    if status != 0:
        _log(f"{bench.name} exited with {status}; stderr tail:\n" + "\n".join(errors.splitlines()[-15:]))
    result: dict[str, Any] = {"bench": bench, "command": command, "status": status, "output": output,
                              "seconds": seconds, "started": started_at, "load": (load_before, os.getloadavg()[0])}
    if bench.summarize and bench.json_name and (OUT / bench.json_name).exists() and status == 0:
        result["summary"] = bench.summarize(OUT / bench.json_name)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated names from --list")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--quick", action="store_true",
                        help="smaller runs to check the suite works (implies --no-docs: not numbers to record)")
    args = parser.parse_args(argv)
    if args.list:
        for bench in SUITE:
            print(f"{bench.name:<26} manage.py {shlex.join(bench.argv)}\n{'':<26} {bench.what}")
        return 0
    chosen = [b for b in SUITE if not args.only or b.name in args.only.split(",")]
    unknown = set(filter(None, args.only.split(","))) - {b.name for b in SUITE}
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    OUT.mkdir(parents=True, exist_ok=True)
    stack = start_stack()
    results = []
    try:
        facts = machine_facts(stack.env)  # the commit the run measured, before anyone commits more
        for bench in chosen:
            results.append(run_bench(bench, stack, quick=args.quick))
    finally:
        stack.stop()
        _log("stack stopped")
    blocks = previous_blocks()
    blocks.update({r["bench"].name: render_block(r) for r in results})
    section = render(blocks, facts)
    (OUT / "benchmarks-section.md").write_text(section + "\n")
    if not (args.no_docs or args.quick):
        write_doc(section)
        _log(f"rewrote the generated section of {DOC.relative_to(ROOT)}")
    return 1 if any(r["status"] != 0 for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
