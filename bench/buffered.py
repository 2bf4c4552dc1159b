"""One process of ``manage.py bench_buffered``: ``--threads`` threads creating cards through one
``TokenPoolClient`` for ``--seconds`` after ``--warmup`` seconds, buffered (reserve from the local
buffer + ``confirm(wait=False)``) or not (reserve + confirm, each a request). Prints one
``RESULT {json}`` line: cards, errors, the reserve() latencies' p50/p99 (ms) and the client's metrics.

Run by the command as ``python -m bench.buffered`` (a process of its own, Django-free: only the
client wheel's package), so several processes can share the machine as real services would."""
from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from typing import Any

# Percentiles as every bench command reads them (nearest rank); imported from a Django-free module.
from bench.loadgen import percentile
from tokenpool_tome import TokenPoolClient


def run(*, base_url: str, key: str, pool: str, threads: int, seconds: float, warmup: float,
        buffered: bool) -> dict[str, Any]:
    client = TokenPoolClient(base_url, key, pool=pool, timeout=30.0, buffer=buffered)
    latencies: list[list[float]] = [[] for _ in range(threads)]
    cards, errors = [0] * threads, [0] * threads
    codes: Counter[str] = Counter()
    barrier = threading.Barrier(threads + 1)
    started = {"at": 0.0}

    def work(index: int) -> None:
        barrier.wait()
        mine, clock = latencies[index], time.perf_counter
        while True:
            now = clock()
            if now - started["at"] >= warmup + seconds:
                return
            try:
                card = client.reserve()
                took = clock() - now
                if buffered:
                    client.confirm(card, wait=False)
                else:
                    client.confirm(card)
            except Exception as exc:  # noqa: BLE001 - counted, the run goes on
                errors[index] += 1
                codes[f"{type(exc).__name__} {getattr(exc, 'code', '')} {getattr(exc, 'status', '')}"] += 1
                continue
            if now - started["at"] >= warmup:
                mine.append(took)
                cards[index] += 1

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    started["at"] = time.perf_counter()
    barrier.wait()
    for w in workers:
        w.join()
    closing = time.perf_counter()
    client.close()  # sends the queued confirmations: part of the cost of the cards counted
    close_seconds = time.perf_counter() - closing
    merged = [x for part in latencies for x in part]
    return {"cards": sum(cards), "errors": sum(errors), "error_codes": dict(codes),
            "seconds": seconds, "close_seconds": round(close_seconds, 3),
            "reserve_p50_ms": round(percentile(merged, 0.50) * 1000, 4),
            "reserve_p99_ms": round(percentile(merged, 0.99) * 1000, 4),
            "metrics": client.metrics}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--key-file", required=True, help="A file holding the API key (never on a command line).")
    parser.add_argument("--pool", required=True)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--buffered", action="store_true")
    args = parser.parse_args()
    with open(args.key_file) as handle:
        key = handle.read().strip()
    result = run(base_url=args.base_url, key=key, pool=args.pool, threads=args.threads, seconds=args.seconds,
                 warmup=args.warmup, buffered=args.buffered)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
