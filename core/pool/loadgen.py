"""HTTP load generator for ``bench_reserve`` (no Django import: it runs as its own process so its
CPU use does not share the benchmark command's GIL).

    python -m core.pool.loadgen --base-url http://127.0.0.1:8000 --key KEY --pool NAME --threads 4 --per-thread 1000

Prints one JSON line: {"elapsed": s, "latencies": [s, ...], "errors": [status, ...]}.
Each thread holds one keep-alive httpx connection, opened before the clock starts."""
from __future__ import annotations

import argparse
import json
import os
import threading
import time
from typing import Callable

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


def run(*, base_url: str, key: str, pool: str, threads: int, per_thread: int) -> dict:
    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads + 1)
    body = json.dumps({"pool": pool})
    headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}

    def worker() -> None:
        mine: list[float] = []
        bad: list[int] = []
        with httpx.Client(base_url=base_url, timeout=30.0, headers=headers) as client:
            client.get("/healthz")
            barrier.wait()
            for _ in range(per_thread):
                started = time.perf_counter()
                response = client.post("/api/v1/reservations", content=body)
                mine.append(time.perf_counter() - started)
                if response.status_code != 201:
                    bad.append(response.status_code)
        with lock:
            latencies.extend(mine)
            errors.extend(bad)

    elapsed = run_timed(worker, threads=threads, barrier=barrier)
    return {"elapsed": elapsed, "latencies": latencies, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--pool", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--per-thread", type=int, required=True)
    args = parser.parse_args()
    # The key comes through the environment, never the command line (visible in `ps`).
    result = run(base_url=args.base_url, key=os.environ["LOADGEN_API_KEY"], pool=args.pool,
                 threads=args.threads, per_thread=args.per_thread)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
