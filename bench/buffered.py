"""One process of ``manage.py bench_buffered``: ``--threads`` threads creating cards through one
``TokenPoolClient`` for ``--seconds`` after ``--warmup`` seconds, buffered (reserve from the local
buffer + ``confirm(wait=False)``) or not (reserve + confirm, each a request). Prints one
``RESULT {json}`` line: cards, errors, the reserve() latencies' p50/p99 (ms) and the client's metrics.

With ``--rate`` (the outage run) it is open loop instead: cards at a fixed rate from a schedule,
with the TOME fallback (``--tome-url``), each card recorded as (unix time, source); the command
stops the server meanwhile and reads the timeline.

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
from tokenpool_tome import HttpTokenizationLibrary, TokenPoolClient, TomeClientConfig


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


def run_paced(*, base_url: str, key: str, pool: str, rate: float, seconds: float, tome_url: str,
              tome_token: str, timeout: float) -> dict[str, Any]:
    """Open loop: card n is due at ``start + n / rate``; 4 threads take the due cards (a card whose
    reserve waits does not hold back the schedule). Each card: [unix time, source, reserve seconds]."""
    tome = HttpTokenizationLibrary(TomeClientConfig(base_url=tome_url, api_token=tome_token))
    client = TokenPoolClient(base_url, key, pool=pool, timeout=timeout, buffer=True, tome=tome)
    cards: list[list[Any]] = []
    lock, next_card = threading.Lock(), [0]
    start = time.monotonic()
    total = int(rate * seconds)

    def work() -> None:
        while True:
            with lock:
                n = next_card[0]
                next_card[0] += 1
            if n >= total:
                return
            time.sleep(max(0.0, start + n / rate - time.monotonic()))
            began = time.perf_counter()
            try:
                card = client.reserve()
                client.confirm(card, wait=False)
            except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                cards.append([time.time(), f"error {type(exc).__name__}", time.perf_counter() - began])
                continue
            cards.append([time.time(), card.source, time.perf_counter() - began])

    workers = [threading.Thread(target=work, daemon=True) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    client.close()
    tome.close()
    return {"cards": sorted(cards), "metrics": client.metrics}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--key-file", required=True, help="A file holding the API key (never on a command line).")
    parser.add_argument("--pool", required=True)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--buffered", action="store_true")
    parser.add_argument("--rate", type=float, default=0.0, help="Open loop at this many cards/s (outage run).")
    parser.add_argument("--tome-url", default="")
    parser.add_argument("--tome-token", default="dev-tome-token")
    args = parser.parse_args()
    with open(args.key_file) as handle:
        key = handle.read().strip()
    if args.rate > 0:
        paced = run_paced(base_url=args.base_url, key=key, pool=args.pool, rate=args.rate, seconds=args.seconds,
                          tome_url=args.tome_url, tome_token=args.tome_token, timeout=5.0)
        print("RESULT " + json.dumps(paced), flush=True)
        return
    result = run(base_url=args.base_url, key=key, pool=args.pool, threads=args.threads, seconds=args.seconds,
                 warmup=args.warmup, buffered=args.buffered)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
