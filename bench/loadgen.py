"""HTTP load generator for ``bench_reserve`` (no Django import: it runs as its own process so its
CPU use does not share the benchmark command's GIL).

    LOADGEN_API_KEY=KEY python -m bench.loadgen --base-url http://127.0.0.1:8000 --pool NAME \\
        --threads 4 --per-thread 1000

The API key comes from the ``LOADGEN_API_KEY`` environment variable, never the command line
(visible in ``ps``). Prints one JSON line: ``{"elapsed": s, "latencies": [s, ...], "failures":
{"<status> <code>": n, ...}}``: latencies of the 201 answers only; every other answer is counted
in ``failures`` by status and contract error code and kept out of the latencies, so fast 503s
can never make a drained pool look quick. Each thread holds one keep-alive httpx connection,
opened before the clock starts."""
from __future__ import annotations

import argparse
import json
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx


def run_timed(worker: Callable[[], None], *, threads: int, barrier: threading.Barrier) -> float:
    """Start ``threads`` workers that each wait on ``barrier`` (sized threads + 1), release them
    together and return the seconds until the last one finishes (set-up before the barrier is
    not timed). Shared with ``bench_reserve``'s in-process service benchmark."""
    workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    started = time.perf_counter()
    for w in workers:
        w.join()
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    """The ``q`` (0 < q <= 1) percentile of ``values`` by nearest rank: the smallest value that at
    least a share ``q`` of ``values`` are at or below (0.0 when empty).

    The one percentile definition of the bench commands (``bench/management/commands/bench_*.py``)
    and this load generator. Nearest rank because it always reports a latency that
    was measured, never one interpolated between two, and it is how wrk's histogram (whose
    percentiles the HTTP lines print beside ours) and loadtest's HdrHistogram read theirs."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = math.ceil(round(q * len(ordered), 9))  # 1-based; round: 0.07 * 100 is 7.000000000000001
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def percentiles(latencies: list[float]) -> tuple[float, float, float]:
    """p50, p95, p99 of ``latencies`` (seconds) in milliseconds (nearest rank, see :func:`percentile`)."""
    p50, p95, p99 = (percentile(latencies, q) * 1000 for q in (0.50, 0.95, 0.99))
    return p50, p95, p99


def failure_label(response: httpx.Response) -> str:
    """``"503 pool_unavailable"``: the status and the contract's error code when the body has one."""
    try:
        code = response.json().get("code")
    except (ValueError, AttributeError):
        code = None
    return f"{response.status_code} {code}" if code else str(response.status_code)


def run(*, base_url: str, key: str, pool: str, threads: int, per_thread: int) -> dict:
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(threads + 1)
    body = json.dumps({"pool": pool})
    headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}

    def worker() -> None:
        mine: list[float] = []
        bad: Counter[str] = Counter()
        with httpx.Client(base_url=base_url, timeout=30.0, headers=headers) as client:
            client.get("/healthz")
            barrier.wait()
            for _ in range(per_thread):
                started = time.perf_counter()
                try:
                    response = client.post("/api/v1/reservations", content=body)
                except httpx.HTTPError as exc:
                    bad[type(exc).__name__] += 1
                    continue
                elapsed = time.perf_counter() - started
                if response.status_code == 201:
                    mine.append(elapsed)
                else:
                    bad[failure_label(response)] += 1
        with lock:
            latencies.extend(mine)
            failures.update(bad)

    elapsed = run_timed(worker, threads=threads, barrier=barrier)
    return {"elapsed": elapsed, "latencies": latencies, "failures": dict(failures)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--pool", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--per-thread", type=int, required=True)
    args = parser.parse_args()
    result = run(base_url=args.base_url, key=os.environ["LOADGEN_API_KEY"], pool=args.pool,
                 threads=args.threads, per_thread=args.per_thread)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
