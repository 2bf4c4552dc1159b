"""Kept-alive connections spread evenly over the web server's worker processes.

Every gunicorn worker polls the one listening socket the master shares with them, and whichever
wakes first accepts. When a client opens its connections in a burst (a connection pool warming up,
a load balancer reconnecting, wrk), one process routinely took 12 to 16 of 16 connections, and a
kept-alive connection stays on the process that accepted it for its whole life. That process's
threads then share one GIL for most of the traffic while the other process idles: measured
interleaved on a quiet machine, balanced 8/8 served 560 and 605 reservations/s against 479 and 381/s
unbalanced, with a lower p99 (docs/benchmarks.md, "kept-alive connections spread over the workers",
rounds 1-2 of its table).

The cure is nginx's (``accept_mutex``/``accept_disabled``) with the counts shared: every worker
publishes how many connections it holds in a small table of shared memory that the master maps
before it forks, and a worker holding as many connections as threads accepts only while no other
accepting worker holds fewer. The least loaded worker always accepts, so the backlog always drains; a
worker holding fewer connections than threads (kept-alive ones count) always accepts, so a wrong or
stale table can never hold a connection below the deployment's thread capacity. What a burst still
gets wrong (counts lag while connections close) is mended afterwards: a worker holding two more than
another closes one kept-alive connection after its answer, once it has lasted
``SHED_SETTLE_SECONDS``, and the client's reconnect lands on the less loaded worker. Entries are
hints, read without locks: a torn read costs one wrong decision, re-made on the next turn of the
worker's loop.
"""
from __future__ import annotations

import mmap
import os
import struct
import time

__all__ = ["LEDGER", "SHED_SETTLE_SECONDS", "STALE_SECONDS", "ConnectionLedger", "may_accept", "should_shed"]

# A worker's loop turns at least once a second (gunicorn's poll timeout) and publishes each turn; a
# record older than this belongs to a worker that died without clearing it.
STALE_SECONDS = 3.0
# Shed only an imbalance that lasted this long, and at most one connection per this long: counts
# lag during a burst (closed connections not yet noticed, accepted ones not yet published) and
# fluctuate under bursty clients whose idle connections come and go (gunicorn closes a connection
# idle for 2 s); what outlasts a second is connections stuck on one worker. Each shed costs its
# client one reconnect.
SHED_SETTLE_SECONDS = 1.0

_RECORD = struct.Struct("=qqd")  # pid, open connections (-1: not accepting), heartbeat (CLOCK_MONOTONIC)
_NOT_ACCEPTING = -1


def may_accept(*, open_connections: int, threads: int, fewest_elsewhere: int | None) -> bool:
    """The balancing rule: fewer connections than threads always accepts; otherwise only the least
    loaded worker does."""
    if open_connections < threads:
        return True
    return fewest_elsewhere is None or open_connections <= fewest_elsewhere


def should_shed(*, open_connections: int, threads: int, fewest_elsewhere: int | None) -> bool:
    """Whether to close one kept-alive connection after its current answer (``Connection: close``):
    this worker queues requests (more connections than threads) while another accepting worker
    holds at least two fewer. The client reconnects and the rule above places the new connection
    on the less loaded worker. Without this, connections stay where a burst or a worker restart put
    them for their whole life (a restarted worker would get none of the existing ones)."""
    return (open_connections > threads and fewest_elsewhere is not None
            and open_connections - fewest_elsewhere >= 2)


class ConnectionLedger:
    """Open-connection counts of the workers of one server, in memory shared across ``fork``.

    Created in the master (this module is imported when gunicorn loads the worker class, before
    any worker forks): an anonymous ``MAP_SHARED`` mapping, so every worker reads and writes the
    same bytes. Each worker owns one record, claimed at start and released at exit."""

    def __init__(self, slots: int = 64) -> None:
        self.slots = slots
        self._map = mmap.mmap(-1, slots * _RECORD.size)

    def claim(self, *, start: int) -> int:
        """A free record for this process, searched from ``start`` (gunicorn's worker age, unique
        among live workers, so workers starting together do not pick the same one); -1 if none."""
        pid, now = os.getpid(), time.monotonic()
        for offset in range(self.slots):
            slot = (start + offset) % self.slots
            owner, _, heartbeat = self._read(slot)
            if owner in (0, pid) or now - heartbeat > STALE_SECONDS:
                self._write(slot, pid, _NOT_ACCEPTING, now)
                return slot
        return -1

    def publish(self, slot: int, *, open_connections: int | None) -> None:
        """This worker's count (``None``: not accepting, e.g. draining or at its limit) and heartbeat."""
        if slot >= 0:
            count = _NOT_ACCEPTING if open_connections is None else open_connections
            self._write(slot, os.getpid(), count, time.monotonic())

    def release(self, slot: int) -> None:
        if slot >= 0:
            self._write(slot, 0, _NOT_ACCEPTING, 0.0)

    def fewest_elsewhere(self, slot: int) -> int | None:
        """The smallest count among the other live, accepting workers (None: there is none)."""
        # Runs on a loaded worker's loop turn when its count changed or 10 ms passed: one Python pass
        # over the 64 records, 10-11 µs (timeit of this call on the 2-core dev box, others' load on it).
        now, fewest = time.monotonic(), None
        for other, (owner, count, heartbeat) in enumerate(_RECORD.iter_unpack(self._map)):
            if (other != slot and owner and count >= 0 and now - heartbeat <= STALE_SECONDS
                    and (fewest is None or count < fewest)):
                fewest = count
        return fewest

    def _read(self, slot: int) -> tuple[int, int, float]:
        return _RECORD.unpack_from(self._map, slot * _RECORD.size)

    def _write(self, slot: int, pid: int, count: int, heartbeat: float) -> None:
        _RECORD.pack_into(self._map, slot * _RECORD.size, pid, count, heartbeat)


# One per server: module state, so it exists in the master before the workers fork.
LEDGER = ConnectionLedger()
