"""``manage.py bench_limits``: what one shared rate-limit decision costs on each backend.

Per backend (``local`` in-process GCRA, ``postgres`` UNLOGGED upsert, ``redis`` Lua script through
Django's RedisCache) and per shape — one thread, and N threads on separate connections either all on
ONE key (a single hot key: the row lock / Redis serialises them) or on a key each — it times
``limiter.take()`` and prints decisions per second and latency percentiles in microseconds. The
per-request auth path makes one such decision for the per-key limit (the failed-authentication
limiter is touched only on a cache miss), so this is the number added to every API request.

Before each backend, a bare round trip on the same kind of connection (``SELECT 1``, a Redis ``GET``) is
timed the same way: on a busy machine the difference to it is the number to read.

Redis: ``--redis-url``, else ``REDIS_URL``, else a private ``redis-server`` on a free port (Debian
``redis-server``), stopped afterwards. The rows/keys written are deleted at the end.
"""
from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.management.base import BaseCommand, CommandParser
from django.db import connection, connections
from django.test.utils import override_settings

from bench.loadgen import percentiles, run_timed
from devtools.netutil import free_port
from keys.limits import LocalLimiter, PostgresLimiter, RedisLimiter


@contextmanager
def _redis(url: str | None) -> Iterator[str | None]:
    if url:
        yield url
        return
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not shutil.os.path.exists(binary):
        yield None
        return
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="bench-limits-redis-")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


class _RoundTrip:
    """``SELECT 1`` / a Redis ``GET`` on the same connection a limiter uses: what any statement costs now."""

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def take(self, name: str, *, rate: float, per: float = 1.0, peek: bool = False) -> float:
        if self.backend == "postgres":
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        else:
            # A GET of a missing key through the cache's own client: one round trip, as the limiter's script.
            caches["default"].get("bench-limits-round-trip")
        return 0.0


class Command(BaseCommand):
    help = "Cost of one shared rate-limit decision per backend (local, postgres, redis)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--decisions", type=int, default=5000, help="Decisions per measurement (default 5000).")
        parser.add_argument("--threads", type=int, default=4, help="Threads of the concurrent shapes (default 4).")
        parser.add_argument("--redis-url", default=None)
        parser.add_argument("--backends", default="local,postgres,redis")

    def handle(self, *args: Any, decisions: int, threads: int, redis_url: str | None, backends: str,
               **options: Any) -> None:
        wanted = [b.strip() for b in backends.split(",") if b.strip()]
        with _redis(redis_url or settings.REDIS_URL or None) as url:
            cache_settings = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url,
                                          "KEY_PREFIX": "bench-limits"}} if url else settings.CACHES
            with override_settings(CACHES=cache_settings):
                self.stdout.write(f"decisions per measurement: {decisions}; concurrent shapes: {threads} threads")
                self.stdout.write(f"{'backend':<9} {'shape':<22} {'decisions/s':>12} {'mean us':>9} "
                                  f"{'p50 us':>8} {'p95 us':>8} {'p99 us':>8}")
                for backend in wanted:
                    if backend == "redis" and not url:
                        self.stdout.write("redis     skipped: no --redis-url, REDIS_URL or redis-server")
                        continue
                    limiter = {"local": LocalLimiter, "postgres": PostgresLimiter, "redis": RedisLimiter}[backend](
                        f"bench-{int(time.time())}")
                    try:
                        if backend != "local":  # the bare round trip at the same moment: the reference
                            self._measure(_RoundTrip(backend), backend, "round trip (reference)", 1, True,
                                          decisions)
                        for shape, n_threads, same_key in (("1 thread", 1, True),
                                                           (f"{threads} threads, one key", threads, True),
                                                           (f"{threads} threads, key each", threads, False)):
                            self._measure(limiter, backend, shape, n_threads, same_key, decisions)
                    finally:
                        limiter.reset()
                        connections.close_all()

    def _measure(self, limiter, backend: str, shape: str, n_threads: int, same_key: bool, decisions: int) -> None:
        per_thread = max(1, decisions // n_threads)
        latencies: list[float] = []
        lock = threading.Lock()
        barrier = threading.Barrier(n_threads + 1)

        names = iter(["hot"] * n_threads if same_key else [f"k{i}" for i in range(n_threads)])

        def work() -> None:
            with lock:
                name = next(names)
            mine = []
            limiter.take(name, rate=1e9)  # connect and load the script outside the timing
            barrier.wait()
            for _ in range(per_thread):
                t0 = time.perf_counter()
                limiter.take(name, rate=1e9)  # never refuses: every decision is a full write
                mine.append(time.perf_counter() - t0)
            with lock:
                latencies.extend(mine)
            connections.close_all()

        wall = run_timed(work, threads=n_threads, barrier=barrier)
        p50, p95, p99 = (ms * 1000 for ms in percentiles(latencies))  # ms -> us
        self.stdout.write(f"{backend:<9} {shape:<22} {len(latencies) / wall:>12,.0f} "
                          f"{statistics.fmean(latencies) * 1e6:>9.0f} {p50:>8.0f} {p95:>8.0f} {p99:>8.0f}")
