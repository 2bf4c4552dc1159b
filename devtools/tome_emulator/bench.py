"""Time each operation of a running emulator (or any TOME) with full batches over one HTTP client.

``python -m devtools.tome_emulator.bench --url http://127.0.0.1:8900`` → one line per operation.
Tokenizes fresh random values, so it leaves ``repeat × batch`` mappings behind in the namespace.
"""
from __future__ import annotations

import argparse
import secrets
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx


def _timed(call: Callable[[], httpx.Response], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call().raise_for_status()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.tome_emulator.bench")
    parser.add_argument("--url", default="http://127.0.0.1:8900")
    parser.add_argument("--token", default="dev-tome-token")
    parser.add_argument("--ns1", default="ns1")
    parser.add_argument("--ns2", default="ns2")
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16,
                        help="threads for the closing single-value throughput run (0 skips it)")
    args = parser.parse_args(argv)
    client = httpx.Client(base_url=args.url, timeout=60.0, headers={"Authorization": f"Bearer {args.token}"})
    ns1, ns2, n = f"/v1/namespaces/{args.ns1}", f"/v1/namespaces/{args.ns2}", args.batch
    fresh = iter([[secrets.token_hex(12) for _ in range(n)] for _ in range(args.repeat)])
    known = [secrets.token_hex(12) for _ in range(n)]
    tokens = client.post(f"{ns1}/tokenize", json={"values": known}).raise_for_status().json()["tokens"]
    r = args.repeat
    cases: list[tuple[str, Callable[[], httpx.Response], int]] = [
        (f"generate {n} (ns1)", lambda: client.post(f"{ns1}/generate", json={"count": n}), r),
        (f"generate {n} (ns2)", lambda: client.post(f"{ns2}/generate", json={"count": n}), r),
        (f"tokenize {n} new values", lambda: client.post(f"{ns1}/tokenize", json={"values": next(fresh)}), r),
        (f"tokenize {n} known values", lambda: client.post(f"{ns1}/tokenize", json={"values": known}), r),
        (f"lookup {n}", lambda: client.post(f"{ns1}/lookup", json={"values": known}), r),
        (f"detokenize {n}", lambda: client.post(f"{ns1}/detokenize", json={"tokens": tokens}), r),
        ("tokenize 1 new value",
         lambda: client.post(f"{ns1}/tokenize", json={"values": [secrets.token_hex(12)]}), 50),
        ("lookup 1", lambda: client.post(f"{ns1}/lookup", json={"values": known[:1]}), 50),
    ]
    for label, call, repeat in cases:
        samples = _timed(call, repeat)
        print(f"{label:<28} median {statistics.median(samples):7.1f} ms"
              f"   min {min(samples):7.1f}   max {max(samples):7.1f}   ({len(samples)} calls)")
    client.close()
    if args.concurrency:
        calls = _throughput(args, threads=args.concurrency, per_thread=100)
        print(f"tokenize 1 new value from {args.concurrency} threads: {calls:,.0f} calls/s")


def _throughput(args: argparse.Namespace, *, threads: int, per_thread: int) -> float:
    def worker(_: int) -> None:
        with httpx.Client(base_url=args.url, timeout=60.0,
                          headers={"Authorization": f"Bearer {args.token}"}) as client:
            for _ in range(per_thread):
                client.post(f"/v1/namespaces/{args.ns1}/tokenize",
                            json={"values": [secrets.token_hex(12)]}).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(worker, range(threads)))
    return threads * per_thread / (time.perf_counter() - started)


if __name__ == "__main__":
    main()
