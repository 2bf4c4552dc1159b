"""TokenPoolClient(buffer=True) over ``httpx.MockTransport`` and a fake clock (issue 22): refills,
size following demand, no stale pair handed out, queued confirmations flushed on close, unused
pairs released on close, fork safety and the TOME fallback only once the buffer is empty.

No timing assertions: waits poll for a state and fail only if it never comes."""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tokenpool_tome import TokenPoolClient, TokenPoolUnavailable
from tokenpool_tome.buffer import DemandMeter, ReservationBuffer, batch_size
from tokenpool_tome.reservation import Reservation

BASE = "http://tokenpool.test"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def until(predicate: Callable[[], bool], what: str) -> None:
    """Wait for a state reached by a background thread (never a timing assertion: only a hang fails)."""
    deadline = time.monotonic() + 30
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.005)


def body(lease_seconds: float = 900.0) -> dict[str, Any]:
    reserved = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    return {"reservation_id": str(uuid.uuid4()), "pool": "default", "internal_token": uuid.uuid4().hex[:16],
            "external_ref_id": "ext_" + uuid.uuid4().hex[:12], "status": "RESERVED", "source": "pool",
            "owner_ref": None, "reserved_at": reserved.isoformat().replace("+00:00", "Z"),
            "expires_at": (reserved + timedelta(seconds=lease_seconds)).isoformat().replace("+00:00", "Z"),
            "used_at": None}


class FakeTokenPool:
    """reservations/batch, confirm/batch and release/batch, with a switch that makes it unreachable."""

    def __init__(self, *, lease_seconds: float = 900.0) -> None:
        self.lease_seconds = lease_seconds
        self.down = False
        self.lock = threading.Lock()
        self.batches: list[int] = []
        self.fetched: list[str] = []
        self.confirmed: list[str] = []
        self.released: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("refused", request=request)
        payload = json.loads(request.content or b"{}")
        path = request.url.path.removeprefix("/api/v1/")
        with self.lock:
            if path == "reservations/batch":
                items = [body(self.lease_seconds) for _ in range(payload["count"])]
                self.batches.append(payload["count"])
                self.fetched.extend(i["reservation_id"] for i in items)
                return httpx.Response(201, json={"reservations": items})
            if path in ("reservations/confirm/batch", "reservations/release/batch"):
                ids = payload["reservation_ids"]
                (self.confirmed if "confirm" in path else self.released).extend(ids)
                return httpx.Response(200, json={"results": [{**body(), "reservation_id": i} for i in ids]})
        return httpx.Response(404, json={"code": "not_found", "detail": "no", "correlation_id": "x"})


class FakeTome:
    def __init__(self) -> None:
        self.generated = 0

    def generate_pairs(self, count: int) -> list[Any]:
        from tokenpool_tome import TokenPair

        self.generated += count
        return [TokenPair(uuid.uuid4().hex[:16], "ext_" + uuid.uuid4().hex[:12]) for _ in range(count)]


def make_client(server: FakeTokenPool, clock: Clock, **kwargs: Any) -> TokenPoolClient:
    return TokenPoolClient(BASE, "key", transport=httpx.MockTransport(server), sleep=lambda _: None, clock=clock,
                           buffer=True, breaker_failure_threshold=1000, **kwargs)


# ---- sizing ------------------------------------------------------------------------------------

def test_the_batch_size_is_about_buffer_seconds_of_measured_demand_between_1_and_500():
    clock = Clock()
    meter = DemandMeter(clock)
    assert batch_size(meter.rate(), 30.0) == 1  # no demand yet: one pair
    meter.record()
    assert batch_size(meter.rate(), 30.0) == 1  # one a minute: a quiet service holds one pair
    for _ in range(600):  # 600 in the last minute: 10/s
        clock.advance(0.05)
        meter.record()
    assert batch_size(meter.rate(), 30.0) == 301
    for _ in range(60_000):
        meter.record()
    assert batch_size(meter.rate(), 30.0) == 500
    clock.advance(61)  # the demand stopped a minute ago
    assert batch_size(meter.rate(), 30.0) == 1


def test_reserve_comes_from_the_buffer_and_batches_grow_with_demand():
    server, clock = FakeTokenPool(), Clock()
    with make_client(server, clock) as client:
        first = client.reserve()
        assert server.batches[0] == 1 and first.reservation_id == server.fetched[0]
        handed = {first.reservation_id}
        for _ in range(2000):
            clock.advance(0.01)
            handed.add(client.reserve().reservation_id)
            if max(server.batches) >= 300:
                break
        assert max(server.batches) >= 300 and max(server.batches) <= 500
        assert len(handed) == client.metrics["handed_out"]  # never the same pair twice
        assert handed <= set(server.fetched)
        metrics = client.metrics
        assert metrics["refills"] == len(server.batches) and metrics["fallbacks"] == 0
    assert set(server.released) == set(server.fetched) - handed  # close gave back every unused pair
    assert client.metrics["released"] == len(server.released) and client.metrics["waste"] == 0


# ---- staleness ---------------------------------------------------------------------------------

def test_a_pair_whose_lease_ends_within_the_margin_is_never_handed_out():
    clock = Clock()
    fetched: list[Reservation] = []
    released: list[str] = []

    def fetch(count: int) -> list[Reservation]:
        batch = [Reservation.from_body(body(lease_seconds=120)) for _ in range(5)]
        fetched.extend(batch)
        return batch

    buffer = ReservationBuffer(fetch=fetch, release=released.extend, buffer_seconds=0.001, safety_margin=60,
                               clock=clock, close_timeout=5)
    first = buffer.take()
    assert first is fetched[0] and len(fetched) == 5  # held 4; the low mark (0) needs no refill yet
    clock.advance(59.9)
    assert buffer.take() is fetched[1]  # usable until 120 - 60 seconds after the request was sent
    clock.advance(0.2)  # now within the margin: the 3 left are stale
    second = buffer.take()
    assert second is fetched[5] and len(fetched) == 10
    assert buffer.counters["waste"] == 3
    buffer.close()
    assert set(released) == {r.reservation_id for r in fetched[2:5] + fetched[6:]}
    assert buffer.counters["released"] == 4 and buffer.counters["handed_out"] == 3


# ---- confirmations and close -------------------------------------------------------------------

def test_queued_confirmations_are_sent_in_a_batch_on_close_and_unused_pairs_released():
    server, clock = FakeTokenPool(), Clock()
    client = make_client(server, clock, buffer_seconds=3000)  # first batch: 50 pairs
    cards = [client.reserve() for _ in range(3)]
    for card in cards:
        assert client.confirm(card, wait=False) is None
    client.close()
    assert sorted(server.confirmed) == sorted(c.reservation_id for c in cards)
    assert set(server.released) == set(server.fetched) - {c.reservation_id for c in cards}
    metrics = client.metrics
    assert metrics["confirms_sent"] == 3 and metrics["confirms_queued"] == 0 and metrics["confirms_lost"] == 0
    assert metrics["released"] == len(server.fetched) - 3 and metrics["waste"] == 0 and metrics["buffered"] == 0


def test_queued_confirmations_are_flushed_in_the_background():
    server, clock = FakeTokenPool(), Clock()
    with make_client(server, clock) as client:
        card = client.reserve()
        client.confirm(card.reservation_id, wait=False)
        until(lambda: server.confirmed == [card.reservation_id], "the background flush")
        assert client.metrics["confirms_sent"] == 1


def test_confirmations_queued_while_tokenpool_is_down_wait_for_it():
    server, clock = FakeTokenPool(), Clock()
    with make_client(server, clock) as client:
        card = client.reserve()
        server.down = True
        client.confirm(card, wait=False)
        until(lambda: client.metrics["confirms_queued"] == 1, "queued")
        server.down = False
        until(lambda: server.confirmed == [card.reservation_id], "sent once TokenPool is back")


# ---- outages -----------------------------------------------------------------------------------

def test_tokenpool_down_the_buffer_serves_first_and_tome_only_once_it_is_empty():
    server, clock, tome = FakeTokenPool(), Clock(), FakeTome()
    with make_client(server, clock, buffer_seconds=3000, tome=tome) as client:
        first = client.reserve()  # a batch of 50
        server.down = True
        served = [client.reserve() for _ in range(49)]
        assert tome.generated == 0 and client.metrics["fallbacks"] == 0
        assert {r.reservation_id for r in [first, *served]} == set(server.fetched)
        direct = client.reserve()
        assert direct.source == "client_direct" and direct.reservation_id is None
        assert tome.generated == 1 and client.metrics["fallbacks"] == 1


def test_without_tome_an_empty_buffer_with_tokenpool_down_raises_unavailable():
    server, clock = FakeTokenPool(), Clock()
    server.down = True
    with make_client(server, clock) as client, pytest.raises(TokenPoolUnavailable):
        client.reserve()


# ---- processes ---------------------------------------------------------------------------------

def test_a_forked_child_never_uses_its_parents_buffer():
    server, clock = FakeTokenPool(), Clock()
    client = make_client(server, clock, buffer_seconds=3000)
    client.reserve()
    # 49 held is below the low mark (one batch of 50): the parent fetches a second batch in the
    # background. Fork only once it is in (a fork while a thread holds a lock, here the fake server's,
    # would copy that lock held into the child).
    until(lambda: len(server.batches) == 2 and client.metrics["buffered"] == 99, "the parent's refill to settle")
    parents, parent_batches = set(server.fetched), len(server.batches)  # 100 fetched, 99 held
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it got and what it released, never run pytest's teardown
        try:
            reservation = client.reserve()
            client.close()
            report = {"id": reservation.reservation_id, "batches": server.batches, "released": server.released}
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(0)  # noqa: SLF001 - a forked test child must not return into pytest
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        report = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert report["id"] not in parents
    assert len(report["batches"]) == parent_batches + 1  # the child fetched a batch of its own
    assert not set(report["released"]) & parents  # and never released the parent's pairs
    again = client.reserve()
    assert again.reservation_id in parents  # the parent's buffer is intact
    client.close()
    assert set(server.released) == set(server.fetched) - {server.fetched[0], again.reservation_id}


def test_many_threads_never_get_the_same_pair():
    server, clock = FakeTokenPool(), Clock()
    handed: deque[str] = deque()
    with make_client(server, clock) as client:
        barrier = threading.Barrier(8)

        def work() -> None:
            barrier.wait()
            for _ in range(200):
                handed.append(str(client.reserve().reservation_id))

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(handed) == len(set(handed)) == 1600
    assert set(handed) | set(server.released) == set(server.fetched)


def test_confirmations_queue_at_most_a_bound_while_tokenpool_answers():
    from tokenpool_tome.confirm_queue import MAX_QUEUED

    server, clock = FakeTokenPool(), Clock()
    seen: list[int] = []
    original = server.__call__

    def watching(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("confirm/batch"):
            seen.append(client.metrics["confirms_queued"])
        return original(request)

    client = TokenPoolClient(BASE, "key", transport=httpx.MockTransport(watching), sleep=lambda _: None,
                             clock=clock, buffer=True, buffer_seconds=3000)
    with client:
        for _ in range(3 * MAX_QUEUED):
            client.confirm(client.reserve(), wait=False)
    assert len(server.confirmed) == 3 * MAX_QUEUED == client.metrics["confirms_sent"]
    assert max(seen) <= MAX_QUEUED


def test_confirm_without_waiting_after_close_is_never_dropped_silently():
    server, clock = FakeTokenPool(), Clock()
    client = make_client(server, clock)
    card = client.reserve()
    client.close()
    with pytest.raises(RuntimeError):  # as confirm(wait=True) on a closed client: its connections are gone
        client.confirm(card, wait=False)
    assert client.metrics["confirms_queued"] == 0


def test_an_unbuffered_client_registers_no_process_hooks_until_it_queues():
    import atexit
    from unittest import mock

    with mock.patch.object(atexit, "register") as register:
        client = TokenPoolClient(BASE, "key", transport=httpx.MockTransport(FakeTokenPool()))
        assert register.call_count == 0
        client.close()


def test_callers_waiting_for_a_refill_do_not_wake_each_other():
    """While the buffer is empty and a fetch is out, waiting callers sleep until it answers: each
    waiter used to notify every other one, which notified in turn (a livelock that kept a core busy
    per process and starved the server, docs/benchmarks.md "Buffered client"). Each pass of a
    waiter's loop reads the clock once, so the clock counts the passes: with the livelock, tens of
    thousands while the fetch is held; without it, a few per waiter (woken once per second at most)."""
    release_fetch, waiting = threading.Event(), threading.Barrier(9)
    reads = [0]

    def clock() -> float:
        reads[0] += 1
        return 1000.0

    def fetch(size: int) -> list[Reservation]:
        release_fetch.wait(timeout=30)
        return [Reservation.from_body(body()) for _ in range(size)]

    buffer = ReservationBuffer(fetch=fetch, release=lambda ids: None, buffer_seconds=30, safety_margin=60,
                               clock=clock, close_timeout=5)
    handed: list[Reservation] = []

    def take() -> None:
        waiting.wait()
        handed.append(buffer.take())

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    waiting.wait()
    time.sleep(0.3)  # the takers are all waiting now (or spinning, which is what this looks for)
    before = reads[0]
    time.sleep(0.3)
    passes = reads[0] - before
    release_fetch.set()
    for t in threads:
        t.join()
    buffer.close()
    assert passes < 100, passes
    assert len({h.reservation_id for h in handed}) == 8


def test_a_caller_waits_for_a_hung_refill_at_most_the_wait_limit_then_the_next_ones_fall_back_at_once():
    """TokenPool accepting connections but not answering (stopped): the callers that find the buffer
    empty fall back (TokenPoolUnavailable, which the client turns into TOME calls) instead of
    waiting out the fetch's whole retry cycle; a completed fetch serves them again."""
    clock, answer = Clock(), threading.Event()

    def fetch(size: int) -> list[Reservation]:
        answer.wait(timeout=30)
        return [Reservation.from_body(body()) for _ in range(size)]

    buffer = ReservationBuffer(fetch=fetch, release=lambda ids: None, buffer_seconds=30, safety_margin=60,
                               clock=clock, close_timeout=5, wait_limit=5.0)
    outcome: list[BaseException] = []

    def first() -> None:
        try:
            buffer.take()
        except TokenPoolUnavailable as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=first)
    waiter.start()
    # The fake clock moves on while the caller waits (it looks again at least once a second).
    until(lambda: clock.advance(1.0) or bool(outcome), "the first caller giving up")
    waiter.join(timeout=30)
    assert len(outcome) == 1 and outcome[0].code == "timeout"
    with pytest.raises(TokenPoolUnavailable):  # the fetch still hangs: the next caller does not wait
        buffer.take()
    answer.set()
    until(lambda: buffer.held > 0, "the fetch answered")
    assert buffer.take().reservation_id
    buffer.close()


def test_takes_racing_stale_discards_and_close_hand_each_pair_out_once_and_account_for_every_pair():
    """take()'s fast path pops without the buffer's lock (reserve() p99 under 16 threads): each pair
    still goes exactly one way — handed out, discarded as stale, or released by close — while 16
    threads take, segments go stale under them and the buffer closes in the middle."""
    from tokenpool_tome.buffer import BufferClosed

    clock, lock = Clock(), threading.Lock()
    fetched: list[str] = []
    released: list[str] = []

    def fetch(count: int) -> list[Reservation]:
        batch = [Reservation.from_body(body(lease_seconds=120)) for _ in range(count)]
        with lock:
            fetched.extend(str(r.reservation_id) for r in batch)
        return batch

    def release(ids: list[str]) -> None:
        with lock:
            released.extend(ids)

    buffer = ReservationBuffer(fetch=fetch, release=release, buffer_seconds=30, safety_margin=60, clock=clock,
                               close_timeout=5)
    handed: deque[str] = deque()
    barrier = threading.Barrier(17)

    def work() -> None:
        barrier.wait()
        while True:  # until the buffer closes under them
            try:
                handed.append(str(buffer.take().reservation_id))
            except TokenPoolUnavailable:  # gave up waiting: the fake clock jumps past the wait limit
                continue
            except BufferClosed:
                return

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    barrier.wait()
    for _ in range(30):  # what is held goes stale (usable 60 s of a 120 s lease) while the takers run
        time.sleep(0.02)
        clock.advance(61)
    buffer.close()
    for t in threads:
        t.join()
    counters = buffer.counters
    assert len(handed) == len(set(handed)) == counters["handed_out"] > 0
    assert set(handed).isdisjoint(released) and len(released) == len(set(released))
    assert set(handed) | set(released) == set(fetched)
    assert counters["waste"] > 0 and counters["waste"] + counters["released"] == len(released)
